"""The ledger against a real PostgreSQL: creation, phases with their stamps, checkpoints, reset."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from airflow_provider_expand.engine.database import Connector
from airflow_provider_expand.engine.ledger.lock import (
    LEDGER_LOCK,
    MigrationLockedError,
    index_key,
    migration_lock,
    partition_key,
    ranges_key,
    xact_lock,
)
from airflow_provider_expand.engine.ledger.store import Ledger
from airflow_provider_expand.engine.lifecycle import Event, Lifecycle


def test_phases_stamp_once_and_reset_starts_over(pg_conn: psycopg.Connection) -> None:
    ledger = Ledger()
    ledger.ensure(pg_conn)
    ledger.ensure(pg_conn)  # idempotent
    lifecycle = Lifecycle(ledger)
    lifecycle.move(pg_conn, "m1", Event.EXPAND_STARTED, dag_id="m1", run_id="r1")
    assert ledger.get(pg_conn, "m1").phase == "expanding"  # type: ignore[union-attr]
    lifecycle.move(pg_conn, "m1", Event.EXPANDED)
    first = ledger.get(pg_conn, "m1")
    assert first is not None and first.expanded_at is not None and first.run_id == "r1"
    lifecycle.move(pg_conn, "m1", Event.EXPANDED)
    again = ledger.get(pg_conn, "m1")
    assert again is not None and again.expanded_at == first.expanded_at
    with pytest.raises(ValueError, match="unknown ledger phase 'nope'"):
        ledger.write_phase(pg_conn, "m1", "nope")  # type: ignore[arg-type]

    ledger.start_step(pg_conn, "m1", "backfill:products", rows_total=10, batch_size=5)
    with pg_conn.transaction(), pg_conn.cursor() as cur:
        ledger.checkpoint(cur, "m1", "backfill:products", 0, last_key="5", rows_added=5)
    step = ledger.step(pg_conn, "m1", "backfill:products")
    assert step is not None and (step.last_key, step.rows_done, step.status) == ("5", 5, "running")
    ledger.finish_step(pg_conn, "m1", "backfill:products")
    assert ledger.steps(pg_conn, "m1")[0].status == "success"

    ledger.reset(pg_conn, "m1", run_id="r2")
    after = ledger.get(pg_conn, "m1")
    assert after is not None and after.phase == "pending" and after.expanded_at is None
    assert after.run_id == "r2" and ledger.steps(pg_conn, "m1") == []


def test_checkpoint_rolls_back_with_its_batch(pg_conn: psycopg.Connection) -> None:
    ledger = Ledger("custom_ledger")
    ledger.ensure(pg_conn)
    ledger.start_step(pg_conn, "m", "backfill:t")
    with pytest.raises(RuntimeError), pg_conn.transaction(), pg_conn.cursor() as cur:
        ledger.checkpoint(cur, "m", "backfill:t", 0, last_key="9", rows_added=9)
        raise RuntimeError("batch failed")
    step = ledger.step(pg_conn, "m", "backfill:t")
    assert step is not None and step.rows_done == 0 and step.last_key is None


def test_migration_lock_excludes_a_second_session(pg_connect: Connector) -> None:
    with pg_connect() as a, pg_connect() as b:
        a.autocommit = True
        with migration_lock(a, "m"):
            locked = pytest.raises(MigrationLockedError, match=rf"'m' is locked .*pid {a.info.backend_pid}")
            with locked, migration_lock(b, "m", wait_seconds=0.2, poll=0.05):
                pass
            with migration_lock(b, "other"):
                pass
        with migration_lock(b, "m"):
            pass


@pytest.mark.parametrize("migration_id", ["ledger", "ledger:create", "index:public.i", "ranges:m:backfill:t"])
def test_no_migration_id_takes_another_kind_of_lock(pg_connect: Connector, migration_id: str) -> None:
    """A migration named ``ledger`` (or after any other key) holds its own lock, not the ledger's or an
    index's: both are taken at once by two sessions, and the keys differ as strings and as hashes."""
    others = [LEDGER_LOCK, index_key("public.i"), ranges_key("m", "backfill:t"), partition_key("m", "s", 0)]
    with pg_connect() as a, pg_connect() as b:
        a.autocommit = True
        with migration_lock(a, migration_id):
            for key in others:
                with b.transaction():
                    xact_lock(b, key, wait=dt.timedelta(0))
        hashes = {
            row[0]
            for key in [*others, f"airflow_expand:migration:{migration_id}"]
            for row in a.execute("SELECT hashtextextended(%s, 0)", (key,))
        }
        assert len(hashes) == len(others) + 1
