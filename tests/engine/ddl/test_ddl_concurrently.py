"""CONCURRENTLY statements in SQL files against a real PostgreSQL: index builds are idempotent (an invalid
index is rebuilt, a valid one a crashed try built counts as applied), and DROP INDEX / DETACH PARTITION
CONCURRENTLY wait out app transactions but give up on table locks."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest

from airflow_provider_expand.engine import errors
from airflow_provider_expand.engine.database import Connector
from airflow_provider_expand.engine.ddl.phase import (
    DDLPolicy,
    DDLStatementError,
    LockRetriesExhaustedError,
    PhaseResult,
    run_phase,
)
from airflow_provider_expand.engine.ledger.store import Ledger
from airflow_provider_expand.engine.lint import lint_sql
from airflow_provider_expand.engine.statements import parse_statements

LOG = logging.getLogger("test_ddl_concurrently")
FAST = DDLPolicy(
    lock_timeout=timedelta(milliseconds=300),
    retries=3,
    backoff_base=timedelta(milliseconds=50),
    backoff_max=timedelta(milliseconds=200),
)


@pytest.fixture
def products(pg_conn: psycopg.Connection) -> psycopg.Connection:
    pg_conn.execute("CREATE TABLE products (id bigint PRIMARY KEY, title text, n int NOT NULL DEFAULT 0)")
    pg_conn.execute("INSERT INTO products (id, title) SELECT g, 'p' || g FROM generate_series(1, 2000) g")
    pg_conn.execute("CREATE TABLE shops (id int PRIMARY KEY)")
    return pg_conn


@pytest.fixture
def app(pg_connect: Connector) -> Iterator[psycopg.Connection]:
    """The application's session: open transactions, table locks."""
    conn = pg_connect()
    yield conn
    conn.close()


def _run(connect: Connector, text: str, *, policy: DDLPolicy = FAST, step: str = "expand") -> PhaseResult:
    assert lint_sql(text, f"{step}.sql", step) == []  # type: ignore[arg-type]  # the forms recommended
    return run_phase(
        connect,
        parse_statements(text, f"{step}.sql"),
        migration_id="m",
        step=step,
        policy=policy,
        ledger=Ledger(),
        log=LOG,
    )


def _indexes(conn: psycopg.Connection) -> dict[str, bool]:
    rows = conn.execute(
        "SELECT indexrelid::regclass::text, indisvalid FROM pg_index WHERE indrelid = 'products'::regclass"
    ).fetchall()
    return {r[0]: r[1] for r in rows}


def _invalid_title_index(conn: psycopg.Connection) -> None:
    """What a crashed or failed build leaves: an INVALID index named idx_products_title."""
    conn.execute("UPDATE products SET title = 'dup' WHERE id IN (1, 2)")
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute("CREATE UNIQUE INDEX CONCURRENTLY idx_products_title ON products (title)")
    conn.execute("UPDATE products SET title = 'p' || id WHERE id IN (1, 2)")
    assert _indexes(conn)["idx_products_title"] is False


@pytest.mark.parametrize("if_not_exists", [True, False])
def test_an_invalid_index_there_before_the_run_is_rebuilt_valid(
    products: psycopg.Connection, pg_connect: Connector, if_not_exists: bool
) -> None:
    _invalid_title_index(products)
    ine = "IF NOT EXISTS " if if_not_exists else ""
    result = _run(
        pg_connect, f"CREATE UNIQUE INDEX CONCURRENTLY {ine}idx_products_title ON products (title);\n"
    )
    assert result.applied == 1
    assert _indexes(products) == {"products_pkey": True, "idx_products_title": True}
    unique = products.execute(
        "SELECT indisunique FROM pg_index WHERE indexrelid = 'idx_products_title'::regclass"
    )
    assert unique.fetchone() == (True,)  # the rebuilt one, not the leftover


def test_a_build_applied_before_its_checkpoint_counts_as_applied_on_the_retry(
    products: psycopg.Connection, pg_connect: Connector, caplog: pytest.LogCaptureFixture
) -> None:
    text = (
        "ALTER TABLE products ADD COLUMN name text;\n"
        "CREATE INDEX CONCURRENTLY idx_products_name ON products (name);\n"
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS idx_products_title ON products (title) WHERE n >= 0;\n"
        "ALTER TABLE products ADD COLUMN b bigint;\n"
    )
    assert _run(pg_connect, text).applied == 4
    # the crash: both builds ran, but the ledger's checkpoint says only group 1 was applied
    ledger = Ledger()
    step = ledger.step(products, "m", "expand")
    assert step is not None and step.last_key is not None
    products.execute("ALTER TABLE products DROP COLUMN b")
    from airflow_provider_expand.engine.ddl.plan import plan_phase

    plan = plan_phase(parse_statements(text, "expand.sql"))
    products.execute(
        "UPDATE airflow_expand.steps SET last_key = %s, rows_done = 1, status = 'failed' WHERE step = 'expand'",
        (plan.checkpoint_key(1),),
    )
    caplog.set_level(logging.INFO, logger=LOG.name)
    result = _run(pg_connect, text)
    assert (result.applied, result.skipped) == (3, 1)
    assert _indexes(products) == {
        "products_pkey": True,
        "idx_products_name": True,
        "idx_products_title": True,
    }
    assert "b" in {
        r[0]
        for r in products.execute("SELECT attname FROM pg_attribute WHERE attrelid = 'products'::regclass")
    }
    lines = [r.getMessage() for r in caplog.records]
    assert any(
        line.startswith("expand.sql:2: index public.idx_products_name already exists and is valid")
        for line in lines
    ), lines


def test_a_valid_index_of_that_name_but_another_definition_is_refused(
    products: psycopg.Connection, pg_connect: Connector
) -> None:
    products.execute("CREATE INDEX idx_products_title ON products (n)")
    with pytest.raises(
        DDLStatementError, match=r"^expand\.sql:1: index public\.idx_products_title already exists"
    ) as err:
        _run(pg_connect, "CREATE INDEX CONCURRENTLY idx_products_title ON products (title);\n")
    assert isinstance(err.value, errors.DefinitiveError) and err.value.sqlstate == "42P07"
    # IF NOT EXISTS asks to keep whatever is there, as PostgreSQL does; the log says so
    assert (
        _run(
            pg_connect, "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_products_title ON products (title);\n"
        ).applied
        == 1
    )
    # a name taken by an index on another table: IF NOT EXISTS would skip the build; refused
    products.execute("CREATE INDEX idx_shops ON shops (id)")
    with pytest.raises(DDLStatementError, match=r"belongs to an index on shops"):
        _run(
            pg_connect,
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_shops ON products (title);\n",
            step="contract",
        )


def test_drop_index_concurrently_waits_out_an_app_transaction_longer_than_lock_timeout(
    products: psycopg.Connection,
    pg_connect: Connector,
    app: psycopg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    products.execute("CREATE INDEX idx_products_title ON products (title)")
    app.execute("SELECT count(*) FROM shops")  # a snapshot on another table: nothing to wait for
    app.execute("SELECT count(*) FROM products WHERE title = 'p7'")  # a transaction using the table
    release = threading.Timer(2.0, app.commit)  # open ~7x lock_timeout
    release.start()
    caplog.set_level(logging.INFO, logger=LOG.name)
    began = time.monotonic()
    result = _run(pg_connect, "DROP INDEX CONCURRENTLY IF EXISTS idx_products_title;\n", step="contract")
    took = time.monotonic() - began
    release.join()
    assert result.applied == 1 and result.retries == ()
    assert took >= 1.8, "the drop did not wait for the app's transaction"
    assert _indexes(products) == {"products_pkey": True}


def test_drop_index_concurrently_behind_a_table_lock_fails_after_its_lock_retries(
    products: psycopg.Connection, pg_connect: Connector, app: psycopg.Connection
) -> None:
    products.execute("CREATE INDEX idx_products_title ON products (title)")
    app.execute("LOCK TABLE products IN SHARE MODE")  # conflicts with DROP INDEX CONCURRENTLY's lock
    began = time.monotonic()
    with pytest.raises(LockRetriesExhaustedError, match=r"^contract\.sql:1: gave up after 4 tries") as err:
        _run(pg_connect, "DROP INDEX CONCURRENTLY idx_products_title;\n", step="contract")
    took = time.monotonic() - began
    assert 4 * 0.3 <= took < 4 * 0.3 + 3.0, took
    assert isinstance(err.value, errors.TransientError) and f"pid {app.info.backend_pid}" in str(err.value)
    app.rollback()
    assert _indexes(products) == {"products_pkey": True, "idx_products_title": True}  # untouched
    # the DAG's retry, once the lock is gone, completes it
    assert _run(pg_connect, "DROP INDEX CONCURRENTLY idx_products_title;\n", step="contract").applied == 1
    assert _indexes(products) == {"products_pkey": True}


def test_detach_partition_concurrently_waits_out_app_transactions_but_not_table_locks(
    products: psycopg.Connection, pg_connect: Connector, app: psycopg.Connection
) -> None:
    products.execute("CREATE TABLE events (id int, at date) PARTITION BY RANGE (at)")
    products.execute(
        "CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')"
    )
    products.execute(
        "CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')"
    )
    detach = "ALTER TABLE events DETACH PARTITION {} CONCURRENTLY;\n"

    app.execute("SELECT count(*) FROM events")  # an app transaction reading the partitioned table
    release = threading.Timer(1.5, app.commit)
    release.start()
    began = time.monotonic()
    assert _run(pg_connect, detach.format("events_2025"), step="contract").retries == ()
    release.join()
    assert time.monotonic() - began >= 1.3

    app.execute("LOCK TABLE events_2026 IN ACCESS EXCLUSIVE MODE")
    with pytest.raises(LockRetriesExhaustedError):
        _run(pg_connect, "SELECT 1;\n" + detach.format("events_2026"), step="rollback")
    app.rollback()
    parts = products.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'events'::regclass"
    ).fetchall()
    assert parts == [("events_2026",)]


def test_detach_partition_interrupted_mid_wait_is_finalized_by_the_retry(
    products: psycopg.Connection, pg_connect: Connector, app: psycopg.Connection
) -> None:
    products.execute("CREATE TABLE events (id int, at date) PARTITION BY RANGE (at)")
    products.execute(
        "CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')"
    )
    text = "ALTER TABLE events DETACH PARTITION events_2025 CONCURRENTLY;\n"
    app.execute("SELECT count(*) FROM events")  # the detach waits for this transaction
    waiting = "SELECT pid FROM pg_stat_activity WHERE query LIKE 'ALTER TABLE events DETACH%' AND wait_event = 'virtualxid'"

    def kill_the_waiting_detach() -> None:  # a failover, a pooler restart, while it waits
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with pg_connect() as conn:
                row = conn.execute(waiting).fetchone()
                if row:
                    conn.execute("SELECT pg_terminate_backend(%s)", (row[0],))
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_waiting_detach)
    killer.start()
    with pytest.raises(errors.TransientError):
        _run(pg_connect, text, step="contract")
    killer.join()
    app.commit()
    pending = "SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = 'events_2025'::regclass"
    assert products.execute(pending).fetchone() == (True,)  # a plain re-run of the statement would fail
    assert _run(pg_connect, text, step="contract").applied == 1
    assert products.execute(pending).fetchone() is None  # detached
    # a crash after the detach, before its checkpoint: the statement counts as applied
    Ledger().reset(products, "m")
    assert _run(pg_connect, text, step="contract").applied == 1
