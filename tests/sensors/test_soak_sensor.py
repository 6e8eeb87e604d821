"""``SoakSensor`` against a real ledger through a real Airflow connection."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_expand.engine.ledger.store import Ledger
from airflow_provider_expand.engine.lifecycle import Event, Lifecycle
from airflow_provider_expand.sensors.soak import SoakSensor


def _live_since(conn: psycopg.Connection, ago: dt.timedelta, column: str = "deployed_at") -> None:
    ledger = Ledger()
    ledger.ensure(conn)
    Lifecycle(ledger).move(conn, "m", Event.EXPAND_STARTED)
    Lifecycle(ledger).move(conn, "m", Event.EXPANDED)
    conn.execute(f"UPDATE airflow_expand.migrations SET {column} = now() - %s", (ago,))


def _sensor(soak: dt.timedelta, **kwargs: Any) -> SoakSensor:
    return SoakSensor(task_id="soak", migration_id="m", postgres_conn_id="app_db", soak=soak, **kwargs)


def test_defers_until_soak_after_deploy(airflow_conn: dict[str, str], pg_conn: psycopg.Connection) -> None:
    _live_since(pg_conn, dt.timedelta(hours=1))
    deployed = pg_conn.execute("SELECT deployed_at FROM airflow_expand.migrations").fetchone()[0]  # type: ignore[index]
    with pytest.raises(TaskDeferred) as deferred:
        _sensor(dt.timedelta(hours=24)).execute({})
    assert deferred.value.trigger.moment == deployed + dt.timedelta(hours=24)
    record = Ledger().get(pg_conn, "m")
    assert record is not None and record.phase == "soaking" and record.backfilled_at is not None


def test_counts_from_expand_without_deploy_and_passes_when_over(
    airflow_conn: dict[str, str], pg_conn: psycopg.Connection
) -> None:
    _live_since(pg_conn, dt.timedelta(hours=2), column="expanded_at")
    pg_conn.execute("UPDATE airflow_expand.migrations SET deployed_at = NULL")
    assert _sensor(dt.timedelta(hours=1)).execute({}) is None
    assert _sensor(dt.timedelta(hours=1), deferrable=False).poke({}) is True
    assert _sensor(dt.timedelta(hours=3), deferrable=False).poke({}) is False


def test_without_ledger_row_it_fails_clearly(
    airflow_conn: dict[str, str], pg_conn: psycopg.Connection
) -> None:
    Ledger().ensure(pg_conn)
    with pytest.raises(RuntimeError, match="has no deployed_at or expanded_at"):
        _sensor(dt.timedelta(seconds=1), deferrable=False).poke({})


def test_dry_run_does_not_wait(airflow_conn: dict[str, str], pg_conn: psycopg.Connection) -> None:
    assert _sensor(dt.timedelta(hours=24), dry_run="True").execute({}) is None
