"""Engine connectors from Airflow connections, so credentials only ever come from Airflow's store."""

from __future__ import annotations

from typing import cast

from airflow.providers.postgres.hooks.postgres import PostgresHook

from airflow_provider_expand.engine.database import Connector


def postgres_connector(postgres_conn_id: str) -> Connector:
    """``PostgresHook.get_conn`` (psycopg 3 under SQLAlchemy 2) typed as the engine's connector."""
    return cast(Connector, PostgresHook(postgres_conn_id=postgres_conn_id).get_conn)
