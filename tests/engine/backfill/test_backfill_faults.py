"""Faults injected into a running backfill: a ``set`` that raises, batches that hit their statement_timeout,
a row too slow to update at all, a table lock held past the retries, the partition still held by another
session, the backfill's connection terminated mid-run (then resumed), and rows the app holds locked."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable

import psycopg
import pytest

from airflow_provider_expand.engine.backfill import run as backfill
from airflow_provider_expand.engine.backfill import walk
from airflow_provider_expand.engine.backfill.run import (
    BackfillBusyError,
    BackfillRowError,
    BackfillRowTimeoutError,
    BackfillSpec,
    run_backfill,
)
from airflow_provider_expand.engine.database import Connector, connector_from_dsn
from airflow_provider_expand.engine.errors import (
    ConcurrencyConflictError,
    DatabaseStatementError,
    DatabaseUnavailableError,
    DefinitiveError,
    TransientError,
)
from airflow_provider_expand.engine.ledger.lock import partition_key
from airflow_provider_expand.engine.ledger.store import Ledger, StepRecord

LOG = logging.getLogger("test.backfill")
WHERE = "name IS NULL AND title IS NOT NULL"
SPEC = BackfillSpec(
    table="products",
    set="name = title",
    where=WHERE,
    batch_size=2_000,
    target_batch_time=None,
    pause=dt.timedelta(0),
)
# Updating a row through this takes 0.1 s for keys 1, 501, 1001, ... (and ``slow_key`` takes ``slow`` s).
SLOW_TITLE = """
CREATE FUNCTION slow_title(k bigint, t text, slow_key bigint, slow float8) RETURNS text AS $$
BEGIN
  IF k = slow_key THEN PERFORM pg_sleep(slow); ELSIF k % 500 = 1 THEN PERFORM pg_sleep(0.1); END IF;
  RETURN t;
END;
$$ LANGUAGE plpgsql
"""


def _count(conn: psycopg.Connection, query: str, *params: object) -> int:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def _release_when(
    dsn: str, blocker: psycopg.Connection, passed: Callable[[StepRecord], bool]
) -> threading.Thread:
    """A thread that ends ``blocker``'s transaction (the app's row locks) once the step's ledger row says
    ``passed`` (or after 60 s); join it after the backfill."""

    def release() -> None:
        ledger = Ledger()
        with psycopg.connect(dsn, autocommit=True) as watcher:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if _count(watcher, "SELECT (to_regclass('airflow_expand.steps') IS NOT NULL)::int"):
                    step = ledger.step(watcher, "m", "backfill:products")
                    if step is not None and passed(step):
                        break
                time.sleep(0.01)
        blocker.rollback()

    releaser = threading.Thread(target=release, daemon=True)
    releaser.start()
    return releaser


def _products(conn: psycopg.Connection, rows: int) -> int:
    """``rows`` products, every 50th without a title (left alone); returns how many the backfill must do."""
    conn.execute("CREATE TABLE products (id bigint PRIMARY KEY, title text, name text, code text NOT NULL)")
    conn.execute(
        "INSERT INTO products SELECT g, CASE WHEN g %% 50 = 0 THEN NULL ELSE 'title ' || g END, NULL, 'c'"
        " FROM generate_series(1, %s) g",
        (rows,),
    )
    conn.execute("VACUUM ANALYZE products")
    return rows - rows // 50


def _assert_consistent(conn: psycopg.Connection, last_key: str | None, rows_done: int) -> None:
    """The checkpoint and the data agree: rows up to ``last_key`` done, none after, ``rows_done`` exact."""
    assert _count(conn, "SELECT count(*) FROM products WHERE name IS NOT NULL") == rows_done
    if last_key is not None:
        assert _count(conn, f"SELECT count(*) FROM products WHERE id <= %s AND {WHERE}", int(last_key)) == 0
        assert (
            _count(conn, "SELECT count(*) FROM products WHERE id > %s AND name IS NOT NULL", int(last_key))
            == 0
        )


@pytest.mark.parametrize(
    ("set_", "sqlstate", "cause"),
    [
        ("name = title || (1 / (id - 1234))::text", "22012", "division by zero"),
        ("name = title, code = CASE WHEN id = 1234 THEN NULL ELSE code END", "23502", "null value"),
    ],
)
def test_a_set_that_raises_is_narrowed_down_to_the_row_and_names_its_key(
    pg_conn: psycopg.Connection, pg_connect: Connector, set_: str, sqlstate: str, cause: str
) -> None:
    _products(pg_conn, 5_000)
    spec = dataclasses.replace(SPEC, set=set_, batch_size=500)
    with pytest.raises(BackfillRowError) as caught:
        run_backfill(pg_connect, spec, migration_id="m", log=LOG)
    error = caught.value
    assert isinstance(error, DefinitiveError) and not isinstance(error, TransientError)
    assert error.sqlstate == sqlstate and error.key == "1234"
    assert 'row of "products" with key 1234' in str(error) and cause in str(error), error
    assert isinstance(error.__cause__, DatabaseStatementError)
    step = Ledger().step(pg_conn, "m", "backfill:products")
    assert step is not None and step.status == "failed"
    assert "key 1234" in (step.error or "") and cause in (step.error or "")
    record = Ledger().get(pg_conn, "m")  # definitive: the lifecycle marks the migration failed
    assert record is not None and record.phase == "failed"
    # The batches narrowing it down committed up to the row before it, with their checkpoint; not the row.
    assert step.last_key == "1233"
    _assert_consistent(pg_conn, step.last_key, step.rows_done)
    assert step.rows_done == 1233 - 24
    assert _count(pg_conn, "SELECT count(*) FROM products WHERE id = 1234 AND name IS NULL") == 1


def test_batches_that_hit_statement_timeout_are_split_and_the_backfill_completes(
    pg_conn: psycopg.Connection, pg_connect: Connector, caplog: pytest.LogCaptureFixture
) -> None:
    to_do = _products(pg_conn, 6_000)
    pg_conn.execute(SLOW_TITLE)
    # 2,000 keys hold 4 slow rows (0.4 s) over the 0.3 s timeout; 1,000 hold 2 (0.2 s) and pass.
    spec = dataclasses.replace(
        SPEC, set="name = slow_title(id, title, 0, 0)", statement_timeout=dt.timedelta(milliseconds=300)
    )
    caplog.set_level(logging.INFO, logger=LOG.name)
    result = run_backfill(pg_connect, spec, migration_id="m", log=LOG)

    assert result.rows_done == result.rows_this_run == to_do
    assert _count(pg_conn, "SELECT count(*) FROM products WHERE name IS DISTINCT FROM title") == 0
    assert result.splits >= 2, result
    splits = [r.getMessage() for r in caplog.records if "split: retrying" in r.getMessage()]
    assert len(splits) == result.splits, splits
    assert 'the batch of up to 2,000 rows of "products"' in splits[0] and "statement_timeout" in splits[0]
    step = Ledger().step(pg_conn, "m", "backfill:products")
    assert step is not None and step.status == "success" and step.rows_done == to_do


def test_a_single_row_slower_than_the_timeout_fails_definitively_naming_its_key(
    pg_conn: psycopg.Connection, pg_connect: Connector
) -> None:
    _products(pg_conn, 3_000)
    pg_conn.execute(SLOW_TITLE)
    spec = dataclasses.replace(
        SPEC,
        set="name = slow_title(id, title, 777, 5)",
        batch_size=256,
        statement_timeout=dt.timedelta(milliseconds=200),
    )
    started = time.monotonic()
    with pytest.raises(BackfillRowTimeoutError, match=r'row of "products" with key 777 alone takes longer'):
        run_backfill(pg_connect, spec, migration_id="m", log=LOG)
    assert time.monotonic() - started < 30
    step = Ledger().step(pg_conn, "m", "backfill:products")
    assert step is not None and step.status == "failed" and "777" in (step.error or "")
    # Everything before the slow row is done and checkpointed; it and everything after it is not.
    assert step.last_key == "776"
    _assert_consistent(pg_conn, step.last_key, step.rows_done)
    assert step.rows_done == 776 - 15


def _terminate_when(dsn: str, app: str, rows_done: int, killed: list[int]) -> None:
    """Once the checkpoint shows ``rows_done``, terminate every backend of ``app`` (a failover's effect)."""
    ledger = Ledger()
    with psycopg.connect(dsn, autocommit=True) as watcher:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if _count(watcher, "SELECT (to_regclass('airflow_expand.steps') IS NOT NULL)::int"):
                step = ledger.step(watcher, "m", "backfill:products")
                if step is not None and step.rows_done >= rows_done:
                    rows = watcher.execute(
                        "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                        (app,),
                    ).fetchall()
                    killed.extend(int(r[0]) for r in rows if r[1])
                    return
            time.sleep(0.01)


def test_a_dropped_connection_is_transient_and_the_next_run_resumes_from_the_checkpoint(
    pg_conn: psycopg.Connection, pg_dsn: str, pg_connect: Connector
) -> None:
    to_do = _products(pg_conn, 100_000)
    app = "backfill-dropped"
    spec = dataclasses.replace(SPEC, batch_size=500, pause=dt.timedelta(milliseconds=10))
    killed: list[int] = []
    killer = threading.Thread(target=_terminate_when, args=(pg_dsn, app, 5_000, killed), daemon=True)
    killer.start()
    with pytest.raises(DatabaseUnavailableError) as caught:
        run_backfill(connector_from_dsn(pg_dsn, application_name=app), spec, migration_id="m", log=LOG)
    killer.join(10)
    assert killed, "the backfill's backend was not found"
    assert isinstance(caught.value, TransientError) and "backfill:products" in str(caught.value)
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)

    ledger = Ledger()
    dropped = ledger.step(pg_conn, "m", "backfill:products")
    # The failure is written on a fresh connection; the checkpoint is the last committed batch's, exactly.
    assert dropped is not None and dropped.status == "failed" and dropped.last_key is not None
    assert "terminat" in (dropped.error or "") or "closed" in (dropped.error or ""), dropped.error
    assert ledger.get(pg_conn, "m") is None  # transient: no phase moved (here: no migration row made)
    assert 5_000 <= dropped.rows_done < to_do
    _assert_consistent(pg_conn, dropped.last_key, dropped.rows_done)

    result = run_backfill(pg_connect, spec, migration_id="m", log=LOG)
    assert result.resumed_from == dropped.last_key
    assert result.rows_this_run == to_do - dropped.rows_done
    assert result.rows_done == to_do
    assert _count(pg_conn, "SELECT count(*) FROM products WHERE name IS DISTINCT FROM title") == 0
    final = ledger.step(pg_conn, "m", "backfill:products")
    assert final is not None and final.status == "success" and final.rows_done == to_do


def test_a_sweep_chunk_that_hits_statement_timeout_is_split(
    pg_conn: psycopg.Connection, pg_dsn: str, pg_connect: Connector, caplog: pytest.LogCaptureFixture
) -> None:
    """Rows 1-1000 are locked while the main pass goes by, so the sweep gets them, and they are slow."""
    to_do = _products(pg_conn, 3_000)
    blocker = psycopg.connect(pg_dsn)
    blocker.execute("SELECT 1 FROM products WHERE id <= 1000 FOR UPDATE")
    releaser = _release_when(pg_dsn, blocker, lambda step: step.last_key is not None)
    # In the sweep the 1,000 keys hold 10 rows of 0.04 s each (0.4 s, over the 0.3 s timeout); 500 pass.
    spec = dataclasses.replace(
        SPEC,
        set="name = title || CASE WHEN id <= 1000 AND id % 100 = 2"
        " THEN left(pg_sleep(0.04)::text, 0) ELSE '' END",
        batch_size=1_000,
        pause=dt.timedelta(milliseconds=100),
        statement_timeout=dt.timedelta(milliseconds=300),
    )
    caplog.set_level(logging.INFO, logger=LOG.name)
    try:
        result = run_backfill(pg_connect, spec, migration_id="m", log=LOG)
    finally:
        releaser.join(10)
        blocker.close()
    assert result.rows_swept == 1_000 - 20 and result.rows_done == to_do and result.splits >= 1, result
    assert _count(pg_conn, "SELECT count(*) FROM products WHERE name IS DISTINCT FROM title") == 0
    splits = [r.getMessage() for r in caplog.records if "split: retrying" in r.getMessage()]
    assert any("in the sweep from key" in m for m in splits), splits


@pytest.mark.one_pg_version("the lock-conflict retry policy")
def test_a_table_lock_held_past_the_retries_is_a_transient_conflict_and_the_rerun_resumes(
    pg_conn: psycopg.Connection, pg_dsn: str, pg_connect: Connector
) -> None:
    to_do = _products(pg_conn, 20_000)
    spec = dataclasses.replace(
        SPEC,
        batch_size=1_000,
        pause=dt.timedelta(milliseconds=50),
        statement_timeout=dt.timedelta(milliseconds=200),
    )
    ledger = Ledger()
    locked, release = threading.Event(), threading.Event()

    def lock_table_midway() -> None:
        with psycopg.connect(pg_dsn, autocommit=True) as other:
            while not (
                _count(other, "SELECT (to_regclass('airflow_expand.steps') IS NOT NULL)::int")
                and (step := ledger.step(other, "m", "backfill:products")) is not None
                and step.rows_done >= 2_000
            ):
                time.sleep(0.005)
            with other.transaction():  # what a long DDL elsewhere, or its queued lock, does to the batches
                other.execute("LOCK TABLE products IN SHARE MODE")
                locked.set()
                release.wait(60)

    locker = threading.Thread(target=lock_table_midway, daemon=True)
    locker.start()
    try:
        with pytest.raises(ConcurrencyConflictError, match=r"tried 6 times") as caught:
            run_backfill(pg_connect, spec, migration_id="m", log=LOG)
    finally:
        release.set()
        locker.join(10)
    assert locked.is_set()
    assert isinstance(caught.value, TransientError) and caught.value.sqlstate == "55P03"
    step = ledger.step(pg_conn, "m", "backfill:products")
    assert step is not None and step.status == "failed" and "tried 6 times" in (step.error or "")
    assert ledger.get(pg_conn, "m") is None  # transient: the phase is not moved
    _assert_consistent(pg_conn, step.last_key, step.rows_done)

    result = run_backfill(pg_connect, spec, migration_id="m", log=LOG)
    assert result.resumed_from == step.last_key and result.rows_done == to_do
    assert result.rows_this_run == to_do - step.rows_done
    assert _count(pg_conn, "SELECT count(*) FROM products WHERE name IS DISTINCT FROM title") == 0


def test_a_partition_still_held_by_another_session_is_transient(
    pg_conn: psycopg.Connection, pg_dsn: str, pg_connect: Connector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lost worker's backend can outlive it for a while: the retry must wait its turn, not fail the run."""
    to_do = _products(pg_conn, 2_000)
    monkeypatch.setattr(backfill, "PARTITION_LOCK_WAIT", 0.5)
    with psycopg.connect(pg_dsn, autocommit=True) as lost_worker:
        lost_worker.execute(
            "SELECT pg_advisory_lock(hashtextextended(%s, 0))", (partition_key("m", "backfill:products", 0),)
        )
        with pytest.raises(BackfillBusyError, match=r"another session is running this partition") as caught:
            run_backfill(pg_connect, SPEC, migration_id="m", log=LOG)
        assert isinstance(caught.value, TransientError)
    assert _count(pg_conn, "SELECT count(*) FROM products WHERE name IS NOT NULL") == 0
    assert run_backfill(pg_connect, SPEC, migration_id="m", log=LOG).rows_done == to_do


def test_a_person_cancelling_a_batch_is_definitive_not_a_split(
    pg_conn: psycopg.Connection, pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``pg_cancel_backend`` is someone stopping the backfill on purpose: 57014, but no statement_timeout."""
    _products(pg_conn, 3_000)
    pg_conn.execute(SLOW_TITLE)
    app = "backfill-cancelled"
    spec = dataclasses.replace(SPEC, set="name = slow_title(id, title, 1234, 30)", batch_size=500)
    cancelled: list[bool] = []

    def cancel_the_sleeping_batch() -> None:
        with psycopg.connect(pg_dsn, autocommit=True) as dba:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not cancelled:
                rows = dba.execute(
                    "SELECT pg_cancel_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = %s AND wait_event = 'PgSleep'"
                    " AND now() - query_start > interval '1 second'",  # the 30 s row, not the 0.1 s ones
                    (app,),
                ).fetchall()
                cancelled.extend(bool(r[0]) for r in rows)
                time.sleep(0.05)

    dba = threading.Thread(target=cancel_the_sleeping_batch, daemon=True)
    dba.start()
    caplog.set_level(logging.INFO, logger=LOG.name)
    with pytest.raises(DatabaseStatementError, match=r"canceling statement due to user request") as caught:
        run_backfill(connector_from_dsn(pg_dsn, application_name=app), spec, migration_id="m", log=LOG)
    dba.join(10)
    assert cancelled and caught.value.sqlstate == "57014" and isinstance(caught.value, DefinitiveError)
    assert not [r for r in caplog.records if "split" in r.getMessage()]
    step = Ledger().step(pg_conn, "m", "backfill:products")
    assert step is not None and step.status == "failed" and step.last_key == "1000"
    _assert_consistent(pg_conn, step.last_key, step.rows_done)


def test_a_window_that_waits_on_an_app_row_lock_is_run_again_skipping_locked_rows(
    pg_conn: psycopg.Connection, pg_dsn: str, pg_connect: Connector, caplog: pytest.LogCaptureFixture
) -> None:
    """The app holds rows 501-510 through the main pass: the window's plain UPDATE waits ROW_LOCK_WAIT on
    them, is rolled back and run again with SKIP LOCKED (so the next few); the sweep does them once free."""
    to_do = _products(pg_conn, 5_000)
    blocker = psycopg.connect(pg_dsn)
    blocker.execute("SELECT 1 FROM products WHERE id BETWEEN 501 AND 510 FOR UPDATE")
    releaser = _release_when(pg_dsn, blocker, lambda step: step.rows_done >= 3_000)
    spec = dataclasses.replace(SPEC, batch_size=500, pause=dt.timedelta(milliseconds=20))
    caplog.set_level(logging.INFO, logger=LOG.name)
    try:
        result = run_backfill(pg_connect, spec, migration_id="m", log=LOG)
    finally:
        releaser.join(10)
        blocker.close()
    assert result.rows_done == to_do and result.rows_swept == 10, result
    assert 1 <= result.locking_windows <= walk.LOCKING_WINDOWS + 1, result
    waited = [r.getMessage() for r in caplog.records if "on a lock" in r.getMessage()]
    assert len(waited) == 1 and "waited 20 ms" in waited[0] and "after key 500" in waited[0], waited
    assert _count(pg_conn, "SELECT count(*) FROM products WHERE name IS DISTINCT FROM title") == 0


def test_with_no_row_locked_every_window_is_the_plain_update(
    pg_conn: psycopg.Connection, pg_connect: Connector
) -> None:
    to_do = _products(pg_conn, 5_000)
    result = run_backfill(pg_connect, dataclasses.replace(SPEC, batch_size=500), migration_id="m", log=LOG)
    assert result.rows_done == to_do and result.locking_windows == 0 and result.rows_swept == 0, result
