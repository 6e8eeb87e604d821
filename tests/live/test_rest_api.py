"""The example migration in a real Airflow, driven through REST API v2 as the UI drives it."""

from __future__ import annotations

import psycopg
import pytest

from airflow_provider_expand.engine.ledger.store import Ledger
from tests.live.conftest import MIGRATION, ROLLBACK, LiveAirflow


@pytest.fixture(scope="module")
def runs(live_airflow: LiveAirflow) -> dict[str, str]:
    """Both runs triggered at once (each migration has a database of its own): they overlap, saving time."""
    return {
        MIGRATION: live_airflow.trigger(
            MIGRATION, {"batch_size": 500, "dry_run": False, "skip_queue_drain": False}
        ),
        ROLLBACK: live_airflow.trigger(ROLLBACK, {}),
    }


def test_example_migration_succeeds_and_soak_waits_in_the_triggerer(
    live_airflow: LiveAirflow, runs: dict[str, str]
) -> None:
    run_id = runs[MIGRATION]
    state, seen = live_airflow.watch(MIGRATION, run_id)
    final = {ti["task_id"]: ti["state"] for ti in live_airflow.task_instances(MIGRATION, run_id)}
    assert state == "success", (final, live_airflow.logs())
    assert "deferred:in_triggerer" in seen["soak"], seen["soak"]
    assert final["soak"] == final["contract"] == final["done"] == "success", final
    assert final["rollback"] == "skipped", final
    with psycopg.connect(live_airflow.dsns[MIGRATION], autocommit=True) as conn:
        record = Ledger().get(conn, MIGRATION)
        backfill = Ledger().step(conn, MIGRATION, "backfill:products")
        columns = {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'products'"
            )
        }
    assert record is not None and record.phase == "completed" and record.run_id == run_id
    assert backfill is not None and backfill.batch_size is not None and backfill.rows_done > 0
    assert "title" not in columns and "name" in columns


def test_bad_conf_is_refused_at_trigger_time(live_airflow: LiveAirflow) -> None:
    response = live_airflow.client.post(
        f"{live_airflow.url}/api/v2/dags/{MIGRATION}/dagRuns",
        json={"logical_date": None, "conf": {"batch_size": 0}},
    )
    assert response.status_code == 400, response.text


def test_failing_check_after_expand_rolls_back_and_the_run_fails(
    live_airflow: LiveAirflow, runs: dict[str, str]
) -> None:
    run_id = runs[ROLLBACK]
    state, _ = live_airflow.watch(ROLLBACK, run_id)
    final = {ti["task_id"]: ti["state"] for ti in live_airflow.task_instances(ROLLBACK, run_id)}
    assert state == "failed", final
    assert final["expand"] == "success" and final["verify_expand"] == "failed", final
    assert final["rollback"] == "success" and final["done"] == "upstream_failed", final
    assert final["queues.resume"] == "success", final
    with psycopg.connect(live_airflow.dsns[ROLLBACK], autocommit=True) as conn:
        record = Ledger().get(conn, ROLLBACK)
    assert record is not None and record.phase == "rolled_back"
