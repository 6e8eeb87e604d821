"""The migration view's data from a real ledger: partition progress (rows/s, ETA), the soak countdown, what
holds the migration, the decisions in the timeline."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from airflow_provider_expand.engine.ledger.decisions import Decisions
from airflow_provider_expand.engine.ledger.overview import APPROVAL_STEP, migration_overview
from airflow_provider_expand.engine.ledger.store import Ledger
from airflow_provider_expand.engine.ledger.timeline import timeline
from airflow_provider_expand.engine.lifecycle import Event, Lifecycle
from airflow_provider_expand.engine.soak import ContractWindow


def _soaking(conn: psycopg.Connection, migration_id: str = "m1") -> Ledger:
    ledger = Ledger()
    ledger.ensure(conn)
    lifecycle = Lifecycle(ledger)
    lifecycle.move(conn, migration_id, Event.EXPAND_STARTED, dag_id=migration_id, run_id="manual__1")
    lifecycle.move(conn, migration_id, Event.EXPANDED)
    return ledger


def test_partitions_report_rate_and_eta_and_the_soak_counts_down(pg_conn: psycopg.Connection) -> None:
    ledger = _soaking(pg_conn)
    ledger.start_step(pg_conn, "m1", "backfill:products", 0, rows_total=1000, batch_size=100)
    ledger.start_step(pg_conn, "m1", "backfill:products", 1, rows_total=500, batch_size=100)
    with pg_conn.transaction(), pg_conn.cursor() as cur:
        ledger.checkpoint(cur, "m1", "backfill:products", 0, last_key="250", rows_added=250)
        ledger.checkpoint(cur, "m1", "backfill:products", 1, last_key="999", rows_added=500)
    ledger.finish_step(pg_conn, "m1", "backfill:products", 1)
    record = ledger.get(pg_conn, "m1")
    steps = ledger.steps(pg_conn, "m1")
    assert record is not None and record.expanded_at is not None
    started = next(s for s in steps if s.part == 0).started_at
    assert started is not None
    now = started + dt.timedelta(seconds=10)

    view = migration_overview(record, steps, soak=dt.timedelta(minutes=5), now=now)

    parts = {p["partition"]: p for p in view["backfill"]}
    assert parts[0]["percent"] == 25.0 and parts[0]["rows_per_second"] == 25.0
    assert parts[0]["eta_seconds"] == 30.0  # 750 rows left at 25 rows/s
    assert (
        parts[1]["status"] == "success" and parts[1]["percent"] == 100.0 and parts[1]["eta_seconds"] is None
    )
    soak = view["soak"]
    expected = (record.expanded_at + dt.timedelta(minutes=5) - now).total_seconds()
    assert soak["state"] == "counting" and soak["remaining_seconds"] == pytest.approx(expected, abs=0.1)
    assert view["links"] == {"dag": "/dags/m1", "run": "/dags/m1/runs/manual__1"}
    assert view["holds"] == []
    assert view["timeline"][0]["event"] == "phase expanded"

    # a contract window pushes the end into it
    windowed = migration_overview(
        record, steps, soak=dt.timedelta(minutes=5), window=ContractWindow.parse("02:00-03:00"), now=now
    )
    assert windowed["soak"]["contract_window"] == "02:00-03:00 UTC"
    assert dt.datetime.fromisoformat(windowed["soak"]["ends_at"]).hour == 2


def test_holds_and_decisions_show_who_held_and_who_decided(pg_conn: psycopg.Connection) -> None:
    ledger = _soaking(pg_conn)
    ledger.start_step(pg_conn, "m1", APPROVAL_STEP, 1)
    ledger.start_step(pg_conn, "m1", "backfill:products", 0, rows_total=10)
    ledger.note_hold(pg_conn, "m1", "backfill:products", 0, "replica lag 80MB > 64MB")
    decisions = Decisions()
    decisions.record(
        pg_conn, "m1", kind="contract approval", choice="wait", actor="alice", run_id="manual__1"
    )
    record = ledger.get(pg_conn, "m1")
    assert record is not None

    view = migration_overview(record, ledger.steps(pg_conn, "m1"), decisions.list(pg_conn, "m1"))

    kinds = {h["kind"]: h for h in view["holds"]}
    assert kinds["approval"]["step"] == APPROVAL_STEP
    assert kinds["health"]["detail"] == "holding: replica lag 80MB > 64MB"
    assert view["decisions"][0]["actor"] == "alice" and view["decisions"][0]["choice"] == "wait"
    assert "contract approval: wait by alice" in timeline(
        "m1", record, ledger.steps(pg_conn, "m1"), decisions.list(pg_conn, "m1")
    )
    assert view["soak"] is None
    # the release clears it: no health hold any more
    ledger.note_hold(pg_conn, "m1", "backfill:products", 0, None)
    released = migration_overview(record, ledger.steps(pg_conn, "m1"), decisions.list(pg_conn, "m1"))
    assert [h["kind"] for h in released["holds"]] == ["approval"]


def test_a_ledger_of_version_2_is_upgraded_with_the_decisions_table(pg_conn: psycopg.Connection) -> None:
    ledger = _soaking(pg_conn)
    pg_conn.execute("DROP TABLE airflow_expand.decisions")
    pg_conn.execute("UPDATE airflow_expand.ledger_version SET version = 2")
    assert Decisions().list(pg_conn, "m1") == []  # readable before the upgrade
    ledger.ensure(pg_conn)
    Decisions().record(pg_conn, "m1", kind="contract approval", choice="contract", actor="bob")
    assert [d.actor for d in Decisions().list(pg_conn, "m1")] == ["bob"]
