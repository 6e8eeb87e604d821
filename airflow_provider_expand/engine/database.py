"""How the engine gets PostgreSQL connections: a zero-argument factory, so one step can open several.

Operators pass :func:`~airflow_provider_expand.hooks.postgres.postgres_connector`; tests and the CLI
pass :func:`connector_from_dsn`. Both give every connection the same protection against stranded locks
(:func:`connect_params` at connect time, :func:`configure_session` right after): a worker host that vanishes
mid-group must not leave ACCESS EXCLUSIVE held until the kernel gives up on the socket (hours).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

Connector = Callable[[], psycopg.Connection]

# libpq TCP keepalives: the client notices a vanished server (failover, a dead route) within ~25 s
# instead of waiting on a dead socket. Connect-time parameters only; ignored on Unix sockets.
KEEPALIVES: dict[str, str] = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
}
# The server side of the same: its backend notices a vanished client just as fast, and an engine
# transaction left idle (a worker frozen between two statements of a group) is ended with its locks.
# Backfill batches and DDL groups run their statements back to back: 60 s idle is never ours.
IDLE_IN_TRANSACTION_TIMEOUT = timedelta(seconds=60)
CLIENT_CHECK_INTERVAL = timedelta(seconds=1)  # PG 14+: a running query stops soon after its client died
_SERVER_KEEPALIVES = {
    "tcp_keepalives_idle": KEEPALIVES["keepalives_idle"],
    "tcp_keepalives_interval": KEEPALIVES["keepalives_interval"],
    "tcp_keepalives_count": KEEPALIVES["keepalives_count"],
}


def ms(d: timedelta) -> str:
    """A duration as a PostgreSQL setting in milliseconds (at least 1 ms: 0 would mean no limit)."""
    return f"{max(int(d.total_seconds() * 1000), 1)}ms"


def connect_params(given: Mapping[str, object]) -> dict[str, str]:
    """The keepalive parameters ``given`` (a DSN's or a connection's parameters) does not set itself."""
    return {k: v for k, v in KEEPALIVES.items() if k not in given}


def configure_session(
    conn: psycopg.Connection,
    *,
    application_name: str | None = None,
    idle_in_transaction_timeout: timedelta = IDLE_IN_TRANSACTION_TIMEOUT,
) -> None:
    """Give a fresh (idle) connection the engine's session settings, in one round trip outside a transaction.

    Session-level, so they hold until the connection closes; the DDL runner re-asserts the timeouts
    before each statement, so a phase file cannot switch them off for the next one.
    """
    settings = {"idle_in_transaction_session_timeout": ms(idle_in_transaction_timeout), **_SERVER_KEEPALIVES}
    if conn.info.server_version >= 140000:
        settings["client_connection_check_interval"] = ms(CLIENT_CHECK_INTERVAL)
    if application_name is not None:
        settings["application_name"] = application_name[:63]
    names, values = list(settings), list(settings.values())
    autocommit = conn.autocommit
    conn.autocommit = True  # no transaction block: a statement pooler must still get to say what it is
    try:
        conn.execute(
            "SELECT set_config(n, v, false) FROM unnest(%s::text[], %s::text[]) AS s(n, v)",
            (names, values),
            prepare=False,
        )
    finally:
        conn.autocommit = autocommit


def configured(conn: psycopg.Connection, *, application_name: str | None = None) -> psycopg.Connection:
    """``conn`` after :func:`configure_session`; closed if that fails, so a factory never leaks one."""
    try:
        configure_session(conn, application_name=application_name)
    except BaseException:
        conn.close()
        raise
    return conn


def connector_from_dsn(dsn: str, *, application_name: str = "airflow-expand") -> Connector:
    """Return a factory opening a fresh, configured connection to ``dsn`` each call."""
    conninfo = make_conninfo(dsn, application_name=application_name, **connect_params(conninfo_to_dict(dsn)))

    def connect() -> psycopg.Connection:
        return configured(psycopg.connect(conninfo))

    return connect


def backend_pid(conn: psycopg.Connection) -> int:
    """The server process id of ``conn``, for logs and for the index monitor to watch.

    Asked of the server: behind a session pooler, the pid in libpq's cancel key is the pooler's invention.
    """
    row = conn.execute("SELECT pg_backend_pid()", prepare=False).fetchone()
    assert row is not None
    return int(row[0])
