"""How the engine gets PostgreSQL connections: a zero-argument factory, so one step can open several.

Operators pass ``PostgresHook(...).get_conn``; tests and the CLI pass :func:`connector_from_dsn`.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg

Connector = Callable[[], psycopg.Connection]


def connector_from_dsn(dsn: str, *, application_name: str = "airflow-expand") -> Connector:
    """Return a factory opening a fresh connection to ``dsn`` each call."""

    def connect() -> psycopg.Connection:
        return psycopg.connect(dsn, application_name=application_name)

    return connect


def backend_pid(conn: psycopg.Connection) -> int:
    """The server process id of ``conn``, for logs and for the index monitor to watch.

    Asked of the server: behind a session pooler, the pid in libpq's cancel key is the pooler's invention.
    """
    row = conn.execute("SELECT pg_backend_pid()", prepare=False).fetchone()
    assert row is not None
    return int(row[0])
