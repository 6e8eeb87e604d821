"""Engine connectors from Airflow connections, so credentials only ever come from Airflow's store."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from airflow.providers.postgres.hooks.postgres import PostgresHook
from airflow.sdk import BaseHook

from airflow_provider_expand.engine.database import Connector, configured, connect_params


def postgres_connector(postgres_conn_id: str, *, application_name: str = "airflow-expand") -> Connector:
    """``PostgresHook.get_conn`` (psycopg 3), with the engine's keepalives and session settings.

    The hook passes a connection's extras to ``psycopg.connect``: the keepalive parameters the Airflow
    connection does not set itself are added to its extras (the hook's own copy), so they apply at
    connect time, where libpq reads them; what the connection sets wins. Its sessions are named
    ``application_name`` (unless the connection names them), so ``pg_stat_activity`` shows them as ours.
    """
    hook = PostgresHook(postgres_conn_id=postgres_conn_id)

    def connect() -> psycopg.Connection:
        airflow_conn = hook.connection  # fetched once per hook, then cached on it
        extras = airflow_conn.extra_dejson
        missing = connect_params(extras)
        if missing:
            airflow_conn.extra = json.dumps({**extras, **missing})
        conn = hook.get_conn()
        if not isinstance(conn, psycopg.Connection):
            raise TypeError(f"{postgres_conn_id}: PostgresHook gave {type(conn).__name__}, not psycopg 3")
        named = None if "application_name" in extras else application_name
        return configured(conn, application_name=named)

    return connect


async def async_postgres_connection(postgres_conn_id: str) -> psycopg.AsyncConnection[Any]:
    """An autocommit ``AsyncConnection`` built from the Airflow connection as ``PostgresHook.get_conn`` does."""
    conn = await BaseHook.aget_connection(postgres_conn_id)
    extra = conn.extra_dejson
    if extra.get("iam"):
        raise ValueError(
            f"Postgres connection {postgres_conn_id!r} uses IAM tokens: the deferrable wait does not "
            "support them (use deferrable=False)"
        )
    kwargs: dict[str, Any] = {
        "host": conn.host,
        "user": conn.login,
        "password": conn.password,
        "dbname": conn.schema,
        "port": conn.port,
    }
    kwargs.update({k: v for k, v in extra.items() if k not in PostgresHook.ignored_extra_options})
    kwargs = {k: v for k, v in kwargs.items() if v not in (None, "")}
    kwargs.setdefault("application_name", "airflow-expand-preflight")
    return await psycopg.AsyncConnection.connect(autocommit=True, **kwargs)
