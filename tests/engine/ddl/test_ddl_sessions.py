"""Engine sessions against a real PostgreSQL: the runner's timeouts survive a file that switches them off,
and a frozen worker's locks are released by the server (idle_in_transaction_session_timeout, keepalives).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from airflow_provider_expand.engine import errors
from airflow_provider_expand.engine.database import Connector, connector_from_dsn
from airflow_provider_expand.engine.ddl.phase import (
    DDLPolicy,
    DDLStatementError,
    DDLTransientError,
    LockRetriesExhaustedError,
    PhaseResult,
    run_phase,
)
from airflow_provider_expand.engine.ledger.store import Ledger
from airflow_provider_expand.engine.lint import lint_sql
from airflow_provider_expand.engine.statements import parse_statements

LOG = logging.getLogger("test_ddl_sessions")
FAST = DDLPolicy(
    lock_timeout=timedelta(milliseconds=300),
    retries=40,
    backoff_base=timedelta(milliseconds=50),
    backoff_max=timedelta(milliseconds=300),
)


@pytest.fixture
def products(pg_conn: psycopg.Connection) -> psycopg.Connection:
    pg_conn.execute("CREATE TABLE products (id bigint PRIMARY KEY, title text, n int NOT NULL DEFAULT 0)")
    pg_conn.execute("INSERT INTO products (id, title) SELECT g, 'p' || g FROM generate_series(1, 500) g")
    return pg_conn


@pytest.fixture
def blocker(pg_connect: Connector) -> Iterator[psycopg.Connection]:
    conn = pg_connect()
    yield conn
    conn.close()


def _run(connect: Connector, text: str, *, policy: DDLPolicy = FAST, step: str = "expand") -> PhaseResult:
    return run_phase(
        connect,
        parse_statements(text, f"{step}.sql"),
        migration_id="m",
        step=step,
        policy=policy,
        ledger=Ledger(),
        log=LOG,
    )


def _columns(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'products'::regclass AND attnum > 0"
        " AND NOT attisdropped"
    ).fetchall()
    return {r[0] for r in rows}


@pytest.mark.parametrize(
    "switch_off",
    [
        "SET lock_timeout = 0",
        "SET LOCAL lock_timeout = 0",
        "RESET ALL",
        "SELECT set_config('lock_timeout', '0', false)",
    ],
)
def test_a_group_that_switches_lock_timeout_off_still_times_out_and_retries(
    products: psycopg.Connection, pg_connect: Connector, blocker: psycopg.Connection, switch_off: str
) -> None:
    text = (
        "-- expand: allow EX801 because this test checks that the runner re-asserts it anyway\n"
        f"{switch_off};\nALTER TABLE products ADD COLUMN name text;\n"
    )
    assert lint_sql(text, "expand.sql", "expand") == []  # the suppression is what lets it through lint
    assert [f.code for f in lint_sql(text.split("\n", 1)[1], "expand.sql", "expand")] == ["EX801"]
    blocker.execute("SELECT count(*) FROM products")  # an open transaction holding ACCESS SHARE
    release = threading.Timer(1.5, blocker.commit)
    release.start()
    result = _run(pg_connect, text)
    release.join()
    assert "name" in _columns(products)
    assert len(result.retries) >= 2, "the ALTER waited for the blocker instead of timing out"
    for retry in result.retries:
        assert retry.where == "expand.sql:3" and 0.25 <= retry.waited.total_seconds() <= 0.6, retry


def test_a_group_that_switches_statement_timeout_off_is_still_cancelled(
    products: psycopg.Connection, pg_connect: Connector
) -> None:
    policy = DDLPolicy(timedelta(seconds=1), 2, statement_timeout=timedelta(milliseconds=300))
    began = time.monotonic()
    with pytest.raises(DDLStatementError, match=r"^expand\.sql:2: .*\[57014\]") as err:
        _run(pg_connect, "SET statement_timeout = 0;\nSELECT pg_sleep(3);\n", policy=policy)
    assert time.monotonic() - began < 2.0
    assert isinstance(err.value, errors.DefinitiveError) and err.value.sqlstate == "57014"


def test_retries_exhausted_is_transient_and_a_lost_connection_too(
    products: psycopg.Connection, pg_connect: Connector, blocker: psycopg.Connection
) -> None:
    blocker.execute("SELECT count(*) FROM products")
    policy = DDLPolicy(lock_timeout=timedelta(milliseconds=100), retries=1)
    with pytest.raises(LockRetriesExhaustedError) as err:
        _run(pg_connect, "ALTER TABLE products ADD COLUMN a int;\n", policy=policy)
    assert isinstance(err.value, errors.ConcurrencyConflictError) and err.value.sqlstate == "55P03"
    blocker.rollback()

    # the DDL backend terminated mid-group (a failover, a pooler restart): transient, group rolled back
    killer = threading.Timer(
        0.8,
        lambda: products.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(5)%'"
        ),
    )
    killer.start()
    with pytest.raises(DDLTransientError, match=r"^expand\.sql:2: .*rolled back") as lost:
        _run(pg_connect, "ALTER TABLE products ADD COLUMN b int;\nSELECT pg_sleep(5);\n")
    killer.join()
    assert isinstance(lost.value, errors.TransientError) and not isinstance(
        lost.value, errors.DefinitiveError
    )
    assert "b" not in _columns(products)
    assert _run(pg_connect, "ALTER TABLE products ADD COLUMN b int;\nSELECT 1;\n").applied == 1  # the retry


def _client_settings(conn: psycopg.Connection) -> dict[str, str]:
    params = conn.info.get_parameters()
    server = dict(
        conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN ('idle_in_transaction_session_timeout',"
            " 'tcp_keepalives_idle', 'tcp_keepalives_interval', 'tcp_keepalives_count',"
            " 'client_connection_check_interval')"
        ).fetchall()
    )
    conn.rollback()
    if conn.info.host.startswith("/"):  # a Unix socket (the embedded server): no TCP, no TCP keepalives
        assert {k: server.pop(k) for k in TCP} == dict.fromkeys(TCP, "0")
        server.update({k: ENGINE_SETTINGS[k] for k in TCP})
    return {
        **{k: params.get(k, "") for k in ("keepalives", "keepalives_idle", "keepalives_interval")},
        **server,
    }


TCP = ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count")


ENGINE_SETTINGS = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "idle_in_transaction_session_timeout": "60000",
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
    "client_connection_check_interval": "1000",
}


def test_dsn_connections_get_keepalives_and_idle_timeout(pg_dsn: str) -> None:
    with connector_from_dsn(pg_dsn)() as conn:
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE  # nothing left open
        assert _client_settings(conn) == ENGINE_SETTINGS
        assert conn.info.get_parameters()["keepalives_count"] == "3"
    with connector_from_dsn(pg_dsn + " keepalives_idle=30")() as conn:  # what the DSN says wins
        assert conn.info.get_parameters()["keepalives_idle"] == "30"


def test_airflow_connections_get_keepalives_and_idle_timeout(
    airflow_conn: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_expand.hooks.postgres import postgres_connector

    connect = postgres_connector(airflow_conn["postgres"])
    with connect() as conn, connect() as second:
        assert _client_settings(conn) == ENGINE_SETTINGS
        assert _client_settings(second) == ENGINE_SETTINGS
    conn_json = json.loads(os.environ["AIRFLOW_CONN_APP_DB"])
    conn_json["extra"] = json.dumps({"keepalives_idle": "30", "application_name": "mine"})
    monkeypatch.setenv("AIRFLOW_CONN_APP_DB", json.dumps(conn_json))
    with postgres_connector(airflow_conn["postgres"])() as conn:
        assert conn.info.get_parameters()["keepalives_idle"] == "30"  # the connection's extras win
        assert conn.info.get_parameters()["keepalives_interval"] == "5"
        assert conn.info.get_parameters()["application_name"] == "mine"


_FREEZING_EXPAND = """
import logging, os, signal, sys
from datetime import timedelta
from airflow_provider_expand.engine.database import connector_from_dsn
from airflow_provider_expand.engine.ddl.phase import DDLPolicy, run_phase
from airflow_provider_expand.engine.ledger.store import Ledger
from airflow_provider_expand.engine.statements import parse_statements

class Freeze(logging.Handler):  # the worker freezes (a VM paused, a host gone) between two statements
    def emit(self, record):
        if "freeze now" in record.getMessage():
            os.kill(os.getpid(), signal.SIGSTOP)

log = logging.getLogger("child")
log.setLevel(logging.INFO)
log.addHandler(Freeze())
policy = DDLPolicy(lock_timeout=timedelta(seconds=1), retries=0, idle_in_transaction_timeout=timedelta(seconds=2))
run_phase(connector_from_dsn(sys.argv[1]), parse_statements(sys.argv[2], "expand.sql"), migration_id="m",
          step="expand", policy=policy, ledger=Ledger(), log=log)
"""


def _exclusive_holder(conn: psycopg.Connection) -> tuple[int, str] | None:
    row = conn.execute(
        "SELECT l.pid, a.state FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.relation = 'products'::regclass AND l.mode = 'AccessExclusiveLock' AND l.granted"
    ).fetchone()
    return (int(row[0]), str(row[1])) if row else None


def test_a_frozen_worker_mid_group_loses_its_lock_to_the_idle_timeout(
    products: psycopg.Connection, pg_dsn: str, pg_connect: Connector, tmp_path: Path
) -> None:
    expand = (
        "ALTER TABLE products ADD COLUMN a int;\n"  # ACCESS EXCLUSIVE until the group commits
        "DO $$ BEGIN RAISE NOTICE 'freeze now'; END $$;\n"
        "ALTER TABLE products ADD COLUMN b int;\n"
    )
    child = subprocess.Popen([sys.executable, "-c", _FREEZING_EXPAND, pg_dsn, expand], env=os.environ.copy())
    try:
        deadline = time.monotonic() + 30
        while (holder := _exclusive_holder(products)) is None or holder[1] != "idle in transaction":
            assert child.poll() is None and time.monotonic() < deadline, "the group never froze"
            time.sleep(0.05)
        frozen_at = time.monotonic()
        while _exclusive_holder(products) is not None:
            assert time.monotonic() - frozen_at < 10, "the frozen worker still holds ACCESS EXCLUSIVE"
            time.sleep(0.1)
        released_after = time.monotonic() - frozen_at
        gone = products.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (holder[0],)
        ).fetchone()
        assert gone == (0,), "the server did not end the idle transaction's backend"
        assert 1.0 <= released_after <= 4.0, released_after  # 2 s timeout, polled every 100 ms
        assert not {"a", "b"} & _columns(products)  # the group rolled back with it
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    # the task is retried on another worker: the expand runs from the start and completes
    result = _run(pg_connect, expand.replace("DO $$ BEGIN RAISE NOTICE 'freeze now'; END $$;\n", ""))
    assert result.applied == 1 and {"a", "b"} <= _columns(products)
