"""A rollback stops the backfill's partitions through the ledger: between two batches, cleanly, at once."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import time

import psycopg
import pytest

from airflow_provider_expand.engine.backfill.run import BackfillSpec, BackfillStoppedError, run_backfill
from airflow_provider_expand.engine.database import Connector, connector_from_dsn
from airflow_provider_expand.engine.errors import DefinitiveError, TransientError
from airflow_provider_expand.engine.ledger.store import Ledger
from airflow_provider_expand.engine.lifecycle import Event, Lifecycle

LOG = logging.getLogger("test.backfill")
WHERE = "name IS NULL AND title IS NOT NULL"
SPEC = BackfillSpec(
    table="products",
    set="name = title",
    where=WHERE,
    batch_size=1_000,
    target_batch_time=None,
    pause=dt.timedelta(milliseconds=20),
)


def _count(conn: psycopg.Connection, query: str, *params: object) -> int:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def _products(conn: psycopg.Connection, rows: int) -> int:
    conn.execute("CREATE TABLE products (id bigint PRIMARY KEY, title text, name text)")
    conn.execute(
        "INSERT INTO products SELECT g, CASE WHEN g %% 50 = 0 THEN NULL ELSE 'title ' || g END"
        " FROM generate_series(1, %s) g",
        (rows,),
    )
    conn.execute("VACUUM ANALYZE products")
    return rows - rows // 50


def _wait(condition: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_rolling_back_stops_a_running_partition_after_its_batch_commits(
    pg_conn: psycopg.Connection, pg_dsn: str
) -> None:
    to_do = _products(pg_conn, 200_000)
    ledger = Ledger()
    lifecycle = Lifecycle(ledger)
    for event in (Event.EXPAND_STARTED, Event.EXPANDED):  # anything but a rollback lets it run
        lifecycle.move(pg_conn, "m", event)
    app = "backfill-stopping"
    outcome: list[BaseException] = []

    def backfill() -> None:
        try:
            run_backfill(connector_from_dsn(pg_dsn, application_name=app), SPEC, migration_id="m", log=LOG)
        except BaseException as exc:
            outcome.append(exc)

    runner = threading.Thread(target=backfill, daemon=True)
    runner.start()

    def progressed() -> bool:
        assert runner.is_alive(), outcome
        step = ledger.step(pg_conn, "m", "backfill:products")
        return step is not None and step.rows_done >= 20_000

    _wait(progressed, "the backfill to get going")
    lifecycle.move(pg_conn, "m", Event.ROLLBACK_STARTED)
    asked = time.monotonic()
    runner.join(30)
    stopped_in = time.monotonic() - asked
    assert not runner.is_alive()
    assert stopped_in < 2.5, f"took {stopped_in:.2f}s to stop"

    assert len(outcome) == 1 and isinstance(outcome[0], BackfillStoppedError), outcome
    error = outcome[0]
    assert isinstance(error, DefinitiveError) and not isinstance(error, TransientError)
    assert "stopped after key" in str(error) and "migration 'm' is rolling back" in str(error)
    step = ledger.step(pg_conn, "m", "backfill:products")
    assert step is not None and step.status == "failed" and "stopped after key" in (step.error or "")
    # It ended on a committed batch: its checkpoint counts exactly the rows written, none beyond last_key.
    assert step.last_key is not None and 20_000 <= step.rows_done < to_do
    assert _count(pg_conn, "SELECT count(*) FROM products WHERE name IS NOT NULL") == step.rows_done
    assert (
        _count(pg_conn, f"SELECT count(*) FROM products WHERE id <= %s AND {WHERE}", int(step.last_key)) == 0
    )
    assert (
        _count(
            pg_conn, "SELECT count(*) FROM products WHERE id > %s AND name IS NOT NULL", int(step.last_key)
        )
        == 0
    )
    # Nothing of it is left holding a lock, and the phase is still the rollback's.
    held = "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE a.application_name = %s"
    assert _count(pg_conn, held, app) == 0
    record = ledger.get(pg_conn, "m")
    assert record is not None and record.phase == "rolling_back"


@pytest.mark.parametrize(
    ("phase", "events"),
    [
        ("rolling_back", (Event.EXPAND_STARTED, Event.ROLLBACK_STARTED)),
        ("rolled_back", (Event.EXPAND_STARTED, Event.ROLLBACK_STARTED, Event.ROLLED_BACK)),
    ],
)
def test_a_partition_starting_during_a_rollback_changes_nothing(
    pg_conn: psycopg.Connection, pg_connect: Connector, phase: str, events: tuple[Event, ...]
) -> None:
    _products(pg_conn, 5_000)
    ledger = Ledger()
    lifecycle = Lifecycle(ledger)
    for event in events:
        lifecycle.move(pg_conn, "m", event)
    spec = dataclasses.replace(SPEC, partitions=2)
    words = phase.replace("_", " ")
    with pytest.raises(BackfillStoppedError, match=rf"stopped before its first batch .* is {words}"):
        run_backfill(pg_connect, spec, migration_id="m", partition=1, log=LOG)
    assert _count(pg_conn, "SELECT count(*) FROM products WHERE name IS NOT NULL") == 0
    step = ledger.step(pg_conn, "m", "backfill:products", 1)
    assert step is not None and step.status == "failed" and step.rows_done == 0
    record = ledger.get(pg_conn, "m")
    assert record is not None and record.phase == phase


def test_rolling_back_stops_the_sweep_too(
    pg_conn: psycopg.Connection, pg_dsn: str, pg_connect: Connector
) -> None:
    """Rows an application holds keep the sweep going round after round: a rollback ends that as well."""
    to_do = _products(pg_conn, 2_000)
    ledger = Ledger()
    lifecycle = Lifecycle(ledger)
    for event in (Event.EXPAND_STARTED, Event.EXPANDED):
        lifecycle.move(pg_conn, "m", event)
    app_holding_rows = psycopg.connect(pg_dsn)
    app_holding_rows.execute("SELECT 1 FROM products WHERE id <= 10 FOR UPDATE")
    asked: list[float] = []

    def roll_back_once_in_the_sweep() -> None:
        with psycopg.connect(pg_dsn, autocommit=True) as other:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                step = ledger.step(other, "m", "backfill:products")
                if step is not None and step.last_key == "2000":  # the main pass is over
                    break
                time.sleep(0.01)
            time.sleep(0.3)  # a few sweep rounds in
            Lifecycle(ledger).move(other, "m", Event.ROLLBACK_STARTED)
            asked.append(time.monotonic())

    rollback = threading.Thread(target=roll_back_once_in_the_sweep, daemon=True)
    rollback.start()
    spec = dataclasses.replace(SPEC, pause=dt.timedelta(milliseconds=100), max_sweep_rounds=100)
    try:
        with pytest.raises(BackfillStoppedError, match=r"stopped after key 2000 .* is rolling back"):
            run_backfill(pg_connect, spec, migration_id="m", log=LOG)
        stopped_in = time.monotonic() - asked[0]
    finally:
        rollback.join(10)
        app_holding_rows.close()
    assert stopped_in < 2.5, f"took {stopped_in:.2f}s to stop"
    step = ledger.step(pg_conn, "m", "backfill:products")
    assert step is not None and step.status == "failed" and step.rows_done == to_do - 10
    assert _count(pg_conn, f"SELECT count(*) FROM products WHERE {WHERE}") == 10
