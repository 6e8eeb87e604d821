"""The DDL runner against a real PostgreSQL: lock retries that never queue the app, groups, resume, ledger."""

from __future__ import annotations

import logging
import os
import random
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
from airflow_provider_expand.engine.database import Connector
from airflow_provider_expand.engine.ddl.phase import (
    PHASE_EVENTS,
    DDLPolicy,
    DDLStatementError,
    LockRetriesExhaustedError,
    PhaseResult,
    StaleCheckpointError,
    run_phase,
)
from airflow_provider_expand.engine.ddl.plan import PhaseFileChangedError, plan_phase
from airflow_provider_expand.engine.ledger.store import Ledger
from airflow_provider_expand.engine.statements import SQLFileError, load_statements, parse_statements

LOG = logging.getLogger("test_ddl")
FAST = DDLPolicy(
    lock_timeout=timedelta(milliseconds=300),
    retries=40,
    backoff_base=timedelta(milliseconds=50),
    backoff_max=timedelta(milliseconds=300),
)


@pytest.fixture
def products(pg_conn: psycopg.Connection) -> psycopg.Connection:
    pg_conn.execute("CREATE TABLE products (id bigint PRIMARY KEY, title text, n int NOT NULL DEFAULT 0)")
    pg_conn.execute("INSERT INTO products (id, title) SELECT g, 'p' || g FROM generate_series(1, 2000) g")
    return pg_conn


def _run(
    connect: Connector,
    sql_file: Path,
    *,
    step: str = "expand",
    policy: DDLPolicy = FAST,
    dry_run: bool = False,
) -> PhaseResult:
    return run_phase(
        connect,
        load_statements(sql_file),
        migration_id="m",
        step=step,
        policy=policy,
        ledger=Ledger(),
        log=LOG,
        events=PHASE_EVENTS[step],
        dry_run=dry_run,
        dag_id="m",
        run_id="r1",
    )


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _columns(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'products'::regclass AND attnum > 0"
        " AND NOT attisdropped"
    ).fetchall()
    return {r[0] for r in rows}


def _indexes(conn: psycopg.Connection) -> dict[str, bool]:
    rows = conn.execute(
        "SELECT indexrelid::regclass::text, indisvalid FROM pg_index WHERE indrelid = 'products'::regclass"
    ).fetchall()
    return {r[0]: r[1] for r in rows}


def _ledger(conn: psycopg.Connection, step: str = "expand") -> tuple[str | None, str | None, str | None]:
    """(migration phase, step status, step error)."""
    ledger = Ledger()
    mig, rec = ledger.get(conn, "m"), ledger.step(conn, "m", step)
    return (mig.phase if mig else None, rec.status if rec else None, rec.error if rec else None)


class Writer:
    """The application: single-row UPDATEs in a loop, each timed, on its own connection."""

    def __init__(self, dsn: str) -> None:
        self.dsn, self.latencies, self.stop = dsn, list[float](), threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                began = time.monotonic()
                conn.execute("UPDATE products SET n = n + 1 WHERE id = %s", (random.randint(1, 2000),))
                self.latencies.append(time.monotonic() - began)
                time.sleep(0.005)

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


@pytest.fixture
def blocker(pg_connect: Connector) -> Iterator[psycopg.Connection]:
    """A connection for holding locks in an open transaction, as a long report query would."""
    conn = pg_connect()
    yield conn
    conn.close()


def test_lock_timeout_gives_up_quickly_never_queues_the_writer_and_succeeds_after_the_blocker(
    products: psycopg.Connection,
    pg_dsn: str,
    pg_connect: Connector,
    blocker: psycopg.Connection,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sql_file = _write(tmp_path, "expand.sql", "ALTER TABLE products ADD COLUMN name text;\n")
    blocker.execute("LOCK TABLE products IN ACCESS SHARE MODE")  # ALTER TABLE needs ACCESS EXCLUSIVE
    blocker_pid = blocker.info.backend_pid
    release = threading.Timer(2.0, blocker.commit)
    caplog.set_level(logging.INFO, logger="test_ddl")
    began = time.monotonic()
    with Writer(pg_dsn) as writer:
        time.sleep(0.2)
        release.start()
        result = _run(pg_connect, sql_file)
        took = time.monotonic() - began
        time.sleep(0.2)
    release.join()

    assert "name" in _columns(products)
    assert took >= 2.0 and len(result.retries) >= 3
    for retry in result.retries:  # each try gave up after lock_timeout, not later
        assert 0.28 <= retry.waited.total_seconds() <= 0.45, retry
        assert retry.where == "expand.sql:1" and retry.backoff <= timedelta(milliseconds=300)
    assert f"products held by pid {blocker_pid} (AccessShareLock" in result.retries[0].blockers
    assert len(writer.latencies) > 50
    worst = max(writer.latencies)
    assert worst <= 0.3 + 0.2, f"writer blocked {worst:.3f}s"
    assert worst >= 0.1, "the writer never queued behind the DDL: the test did not exercise the lock"
    retry_lines = [r.getMessage() for r in caplog.records if "lock not available" in r.getMessage()]
    assert len(retry_lines) == len(result.retries)
    assert "expand.sql:1: lock not available after" in retry_lines[0]
    assert "ALTER TABLE products ADD COLUMN name text" in retry_lines[0]
    assert _ledger(products) == ("expanded", "success", None)


def test_retries_exhausted_is_a_clear_error_and_the_step_is_failed(
    products: psycopg.Connection, pg_connect: Connector, blocker: psycopg.Connection, tmp_path: Path
) -> None:
    sql_file = _write(tmp_path, "expand.sql", "\n\nALTER TABLE products ADD COLUMN name text;\n")
    blocker.execute("SELECT count(*) FROM products")  # an open transaction that read the table
    policy = DDLPolicy(lock_timeout=timedelta(milliseconds=200), retries=2)
    began = time.monotonic()
    with pytest.raises(LockRetriesExhaustedError) as err:
        _run(pg_connect, sql_file, policy=policy)
    assert time.monotonic() - began < 3.0
    message = str(err.value)
    assert message.startswith("expand.sql:3: gave up after 3 tries, each waiting 200ms (lock_timeout)")
    assert f"held by pid {blocker.info.backend_pid}" in message
    assert err.value.sqlstate == "55P03"
    phase, status, error = _ledger(products)
    # transient (the lock is busy, for now): the phase stays, so the DAG's retry resumes the expand
    assert isinstance(err.value, errors.TransientError)
    assert (phase, status) == ("expanding", "failed") and error == message
    assert "name" not in _columns(products)


def test_a_failing_statement_leaves_its_group_unapplied_and_rollback_runs_after(
    products: psycopg.Connection, pg_connect: Connector, tmp_path: Path
) -> None:
    sql_file = _write(
        tmp_path,
        "expand.sql",
        "ALTER TABLE products ADD COLUMN a int;\n"
        "ALTER TABLE products ADD COLUMN b int;\n"
        "-- this one is wrong\n"
        "ALTER TABLE products ADD COLUMN title text;\n",
    )
    with pytest.raises(
        DDLStatementError, match=r"^expand\.sql:4: 'ALTER TABLE products ADD COLUMN title"
    ) as err:
        _run(pg_connect, sql_file)
    assert err.value.sqlstate == "42701" and "already exists" in str(err.value)
    assert "transaction group 1 was rolled back: none of its 3 statement(s) applied" in str(err.value)
    assert not {"a", "b"} & _columns(products)
    assert _ledger(products)[:2] == ("failed", "failed")

    rollback = _write(tmp_path, "rollback.sql", "ALTER TABLE products DROP COLUMN IF EXISTS a;\n")
    result = _run(pg_connect, rollback, step="rollback")
    assert (result.applied, result.skipped) == (1, 0)
    assert _ledger(products, "rollback") == ("rolled_back", "success", None)

    # after a rollback, the expand's checkpoint is stale: starting over needs a reset of the ledger
    sql_file.write_text(sql_file.read_text().replace("COLUMN title", "COLUMN c"))
    with pytest.raises(StaleCheckpointError, match=r"'m': a rollback began after the earlier try of expand"):
        _run(pg_connect, sql_file)
    Ledger().reset(products, "m")
    assert _run(pg_connect, sql_file).applied == 1
    assert {"a", "b", "c"} <= _columns(products)


def test_resume_skips_applied_groups_and_a_completed_phase_is_a_no_op(
    products: psycopg.Connection, pg_connect: Connector, tmp_path: Path
) -> None:
    products.execute("UPDATE products SET title = NULL WHERE id = 7")
    text = (
        "ALTER TABLE products ADD COLUMN name text;\n"  # group 1, transaction
        "CREATE INDEX CONCURRENTLY idx_products_name ON products (name);\n"  # group 2, autocommit
        "ALTER TABLE products ADD CONSTRAINT title_present CHECK (title IS NOT NULL);\n"  # group 3
    )
    sql_file = _write(tmp_path, "expand.sql", text)
    with pytest.raises(DDLStatementError, match=r"^expand\.sql:3: .*\[23514\]"):
        _run(pg_connect, sql_file)
    assert "name" in _columns(products) and _indexes(products)["idx_products_name"] is True
    step = Ledger().step(products, "m", "expand")
    assert step is not None and step.rows_done == 2 and step.last_key is not None
    assert step.last_key.startswith("2:")

    products.execute("UPDATE products SET title = 'fixed' WHERE id = 7")  # fix the cause
    # comments and layout are not a change to the applied part
    _write(
        tmp_path,
        "expand.sql",
        "-- expand\nALTER TABLE products\n  ADD COLUMN name text;\n" + text.split("\n", 1)[1],
    )
    result = _run(pg_connect, sql_file)  # re-running groups 1-2 would fail: "already exists"
    assert (result.groups, result.applied, result.skipped) == (3, 1, 2)
    assert _ledger(products) == ("expanded", "success", None)
    again = _run(pg_connect, sql_file)
    assert (again.applied, again.skipped) == (0, 3)

    _write(tmp_path, "expand.sql", text.replace("name text", "name varchar(200)"))
    with pytest.raises(
        PhaseFileChangedError, match=r"^expand\.sql:1-3: the ledger says an earlier try applied 3 group"
    ):
        _run(pg_connect, sql_file)


def test_concurrently_build_waits_out_app_transactions_but_not_table_locks(
    products: psycopg.Connection,
    pg_connect: Connector,
    blocker: psycopg.Connection,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    products.execute("ALTER TABLE products ADD COLUMN name text")
    sql_file = _write(
        tmp_path,
        "expand.sql",
        "CREATE INDEX CONCURRENTLY idx_products_name ON products (name);\n"
        "CREATE INDEX CONCURRENTLY idx_products_n ON products (n);\n",
    )
    caplog.set_level(logging.INFO, logger="test_ddl")
    # an app transaction open 1.5 s, five times lock_timeout: the build waits for it ("waiting for
    # writers") instead of timing out, as PostgreSQL's own lock_timeout would make it do, every try
    blocker.execute("UPDATE products SET n = 1 WHERE id = 3")
    release = threading.Timer(1.5, blocker.commit)
    release.start()
    started = time.monotonic()
    first = _run(pg_connect, sql_file)
    release.join()
    assert time.monotonic() - started >= 1.4
    assert first.retries == () and _indexes(products)["idx_products_name"] is True
    assert _indexes(products)["idx_products_n"] is True

    # a table lock that conflicts with the build: each try gives up after lock_timeout, then it succeeds
    products.execute("DROP INDEX idx_products_name")
    products.execute("DROP INDEX idx_products_n")
    ledger_conn = pg_connect()
    ledger_conn.autocommit = True
    Ledger().reset(ledger_conn, "m")  # start over: the expand runs again
    ledger_conn.close()
    blocker.execute("LOCK TABLE products IN SHARE UPDATE EXCLUSIVE MODE")
    release = threading.Timer(1.5, blocker.commit)
    release.start()
    second = _run(pg_connect, sql_file)
    release.join()
    assert len(second.retries) >= 2 and all(r.where == "expand.sql:1" for r in second.retries)
    assert _indexes(products) == {"products_pkey": True, "idx_products_name": True, "idx_products_n": True}


def test_create_index_concurrently_if_not_exists_rebuilds_a_stale_invalid_index(
    products: psycopg.Connection, pg_connect: Connector, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a stale INVALID index of the same name, as a crashed build leaves: IF NOT EXISTS must not accept it
    products.execute("UPDATE products SET title = 'dup' WHERE id IN (1, 2)")
    with pytest.raises(psycopg.errors.UniqueViolation):
        products.execute("CREATE UNIQUE INDEX CONCURRENTLY idx_products_title ON products (title)")
    assert _indexes(products)["idx_products_title"] is False
    sql_file = _write(
        tmp_path,
        "expand.sql",
        "ALTER TABLE products ADD COLUMN name text;\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_products_title ON products (title);\n"
        "ALTER TABLE products ADD COLUMN b int;\n"
        "DO $$ BEGIN RAISE NOTICE 'named % rows', (SELECT count(*) FROM products WHERE title LIKE 'p%'); END $$;\n",
    )
    caplog.set_level(logging.INFO, logger="test_ddl")
    result = _run(pg_connect, sql_file)
    assert (result.groups, result.applied) == (3, 3)
    assert "server notice: named 1998 rows" in [r.getMessage() for r in caplog.records]
    assert _indexes(products) == {"products_pkey": True, "idx_products_title": True}
    assert {"name", "b"} <= _columns(products)


def test_unique_build_over_duplicates_fails_naming_the_line_and_leaves_no_invalid_index(
    products: psycopg.Connection, pg_connect: Connector, tmp_path: Path
) -> None:
    products.execute("UPDATE products SET title = 'dup' WHERE id IN (1, 2)")
    sql_file = _write(
        tmp_path, "expand.sql", "SELECT 1;\nCREATE UNIQUE INDEX CONCURRENTLY idx_u ON products (title);\n"
    )
    with pytest.raises(DDLStatementError, match=r"^expand\.sql:2: .*\[23505\]") as err:
        _run(pg_connect, sql_file)
    assert "dropped the invalid index it left: public.idx_u" in str(err.value)
    assert _indexes(products) == {"products_pkey": True}


def test_statement_timeout_fails_at_once(
    products: psycopg.Connection, pg_connect: Connector, tmp_path: Path
) -> None:
    sql_file = _write(tmp_path, "contract.sql", "SELECT 1;\nSELECT pg_sleep(2);\n")
    policy = DDLPolicy(
        lock_timeout=timedelta(seconds=1), retries=5, statement_timeout=timedelta(milliseconds=200)
    )
    began = time.monotonic()
    with pytest.raises(
        DDLStatementError,
        match=r"^contract\.sql:2: .*\[57014\]: canceling statement due to statement timeout",
    ):
        _run(pg_connect, sql_file, policy=policy)
    assert time.monotonic() - began < 1.5


def test_transaction_control_is_refused_before_anything_runs(
    products: psycopg.Connection, pg_connect: Connector, tmp_path: Path
) -> None:
    sql_file = _write(tmp_path, "expand.sql", "ALTER TABLE products ADD COLUMN a int;\n\nCOMMIT;\n")
    with pytest.raises(SQLFileError, match=r"^expand\.sql:3: transaction control \(COMMIT\) is not allowed"):
        _run(pg_connect, sql_file)
    assert "a" not in _columns(products)
    assert products.execute("SELECT to_regnamespace('airflow_expand')").fetchone() == (None,)


def test_dry_run_logs_the_plan_and_changes_nothing(
    products: psycopg.Connection, pg_connect: Connector, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sql_file = _write(
        tmp_path,
        "expand.sql",
        "ALTER TABLE products ADD COLUMN name text;\nALTER TABLE products ADD COLUMN b int;\n"
        "CREATE INDEX CONCURRENTLY idx_products_name ON products (name);\n",
    )
    caplog.set_level(logging.INFO, logger="test_ddl")
    result = _run(pg_connect, sql_file, dry_run=True)
    assert result.dry_run and (result.groups, result.applied) == (2, 0)
    lines = [r.getMessage() for r in caplog.records]
    assert "[dry run]   expand.sql:2 [transaction group 1] ALTER TABLE products ADD COLUMN b int" in lines
    assert (
        "[dry run]   expand.sql:3 [autocommit] CREATE INDEX CONCURRENTLY idx_products_name ON products (name)"
        in lines
    )
    assert not {"name", "b"} & _columns(products)
    assert products.execute("SELECT to_regnamespace('airflow_expand')").fetchone() == (None,)


_CRASHING_EXPAND = """
import logging, sys
from datetime import timedelta
from airflow_provider_expand.engine.database import connector_from_dsn
from airflow_provider_expand.engine.ddl.phase import PHASE_EVENTS, DDLPolicy, run_phase
from airflow_provider_expand.engine.ledger.store import Ledger
from airflow_provider_expand.engine.statements import parse_statements
run_phase(connector_from_dsn(sys.argv[1]), parse_statements(sys.argv[2], "expand.sql"), migration_id="m",
          step="expand", policy=DDLPolicy(lock_timeout=timedelta(seconds=1), retries=0), ledger=Ledger(),
          log=logging.getLogger("child"), events=PHASE_EVENTS["expand"])
"""


def test_rollback_runs_after_the_expand_worker_was_killed_mid_statement(
    products: psycopg.Connection, pg_dsn: str, pg_connect: Connector, tmp_path: Path
) -> None:
    expand = (
        "ALTER TABLE products ADD COLUMN a int;\nSELECT pg_sleep(60);\n"  # holds ACCESS EXCLUSIVE, sleeps
    )
    child = subprocess.Popen([sys.executable, "-c", _CRASHING_EXPAND, pg_dsn, expand], env=os.environ.copy())
    try:
        deadline = time.monotonic() + 30
        while not products.execute(
            "SELECT 1 FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%'"
        ).fetchone():
            assert child.poll() is None and time.monotonic() < deadline, "the expand never started"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    rollback = _write(tmp_path, "rollback.sql", "ALTER TABLE products DROP COLUMN IF EXISTS a;\n")
    began = time.monotonic()
    result = _run(pg_connect, rollback, step="rollback", policy=DDLPolicy(timedelta(milliseconds=300), 20))
    # the orphaned backend notices its client is gone (client_connection_check_interval) and lets go
    assert time.monotonic() - began < 8
    assert result.applied == 1 and "a" not in _columns(products)
    assert _ledger(products, "rollback") == ("rolled_back", "success", None)


def test_policy_rejects_bad_values_and_backoff_is_capped_full_jitter() -> None:
    with pytest.raises(ValueError, match="lock_timeout must be positive"):
        DDLPolicy(lock_timeout=timedelta(0), retries=1)
    with pytest.raises(ValueError, match="ddl_retries must be >= 0"):
        DDLPolicy(lock_timeout=timedelta(seconds=1), retries=-1)
    policy = DDLPolicy(
        timedelta(seconds=1), 5, backoff_base=timedelta(milliseconds=100), backoff_max=timedelta(seconds=1)
    )
    waits = [policy.backoff(attempt) for attempt in range(1, 9) for _ in range(50)]
    assert all(timedelta(0) <= w <= timedelta(seconds=1) for w in waits)
    assert max(policy.backoff(1) for _ in range(200)) <= timedelta(milliseconds=100)
    assert max(policy.backoff(6) for _ in range(200)) > timedelta(milliseconds=400)  # it grows


def test_plan_groups_contiguous_statements_and_isolates_concurrently() -> None:
    plan = plan_phase(
        parse_statements(
            "ALTER TABLE t ADD a int; ALTER TABLE t ADD b int;\nCREATE INDEX CONCURRENTLY i ON t (a);\n"
            "VACUUM t;\nALTER TABLE t ADD c int;",
            "expand.sql",
        )
    )
    assert [(g.number, g.autocommit, len(g.statements)) for g in plan.groups] == [
        (1, False, 2),
        (2, True, 1),
        (3, True, 1),
        (4, False, 1),
    ]
    assert plan.statement_count == 5 and plan.groups[3].mode == "transaction group 4"
