"""Airflow's retry policy through ``dag.test()``: a dropped connection is retried and resumes, a definitive
failure fails at once (one try) and rolls back."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from airflow_provider_expand.engine.ledger.store import Ledger
from tests.dags.harness import copy_migration, install_dag_file, run_dag, seed_demo, states

ROWS = 60_000


def _terminate_once_during_backfill(
    dsn: str, migration_id: str, done: threading.Event, killed: list[int], spare: int
) -> None:
    """When the backfill has committed some batches, terminate every other backend of the database once."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        deadline = time.monotonic() + 120
        while not done.is_set() and time.monotonic() < deadline:
            row = (
                conn.execute(
                    "SELECT rows_done FROM airflow_expand.steps WHERE migration_id = %s AND step = 'backfill:products'",
                    (migration_id,),
                ).fetchone()
                if conn.execute("SELECT to_regclass('airflow_expand.steps')").fetchone() != (None,)
                else None
            )
            if row and row[0] > 0:
                pids = conn.execute(
                    "SELECT pg_terminate_backend(pid), pid FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid NOT IN (pg_backend_pid(), %s)",
                    (spare,),
                ).fetchall()
                killed.extend(int(p) for ok, p in pids if ok)
                return
            time.sleep(0.05)


def _tries(run: Any) -> dict[str, int]:
    return {ti.task_id: int(ti.try_number) for ti in run.get_task_instances()}


def test_a_dropped_connection_is_retried_and_the_backfill_resumes(
    tmp_path: Path, airflow_home: Path, airflow_conn: dict[str, str], pg_dsn: str, pg_conn: psycopg.Connection
) -> None:
    seed_demo(pg_conn, ROWS)
    migration_id = f"retry_{uuid.uuid4().hex[:8]}"
    backfill = {
        "table": "products",
        "set": "name = title, price_cents = round(price * 100)::bigint",
        "where": "name IS NULL OR (price_cents IS NULL AND price IS NOT NULL)",
        "batch_size": 500,
        "target_batch_time": "20ms",
        "pause": "20ms",
    }
    folder = copy_migration(
        tmp_path, migration_id, soak="1s", queues=None, retries=2, retry_delay="1s", backfill=[backfill]
    )
    dag_file = install_dag_file(airflow_home, folder.parent, migration_id)
    done, killed = threading.Event(), []
    killer = threading.Thread(
        target=_terminate_once_during_backfill,
        args=(pg_dsn, migration_id, done, killed, pg_conn.info.backend_pid),
    )
    killer.start()
    try:
        run = run_dag(dag_file, migration_id)
    finally:
        done.set()
        killer.join()
    result = states(run)
    assert killed, "the backfill was never caught mid-run"
    assert str(run.state) == "success", result
    assert result["rollback"] == "skipped", result
    assert _tries(run)["backfill.products"] == 2, _tries(run)
    step = Ledger().step(pg_conn, migration_id, "backfill:products")
    assert step is not None and step.status == "success"
    wrong = "SELECT count(*) FROM products WHERE name IS DISTINCT FROM 'Product ' || id"
    assert pg_conn.execute(wrong).fetchone() == (0,)


def test_a_definitive_failure_fails_at_once_and_rolls_back(
    tmp_path: Path, airflow_home: Path, airflow_conn: dict[str, str], pg_dsn: str, pg_conn: psycopg.Connection
) -> None:
    seed_demo(pg_conn, 2_000)
    migration_id = f"definitive_{uuid.uuid4().hex[:8]}"
    backfill = {
        "table": "products",
        # one row's value does not fit: a definitive failure (22012), no retry can fix it
        "set": "name = CASE WHEN id = 777 THEN (1 / 0)::text ELSE title END",
        "where": "name IS NULL",
    }
    folder = copy_migration(
        tmp_path, migration_id, soak="1s", queues=None, retries=3, retry_delay="1s", backfill=[backfill]
    )
    dag_file = install_dag_file(airflow_home, folder.parent, migration_id)
    run = run_dag(dag_file, migration_id)
    result = states(run)
    assert str(run.state) == "failed", result
    assert result["backfill.products"] == "failed" and result["rollback"] == "success", result
    assert _tries(run)["backfill.products"] == 1, _tries(run)
    record = Ledger().get(pg_conn, migration_id)
    assert record is not None and record.phase == "rolled_back"
