"""``PhaseSQLOperator`` through a real Airflow connection, alone and in a DAG run by ``dag.test()``."""

from __future__ import annotations

import textwrap
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest
from airflow.sdk import Context

from airflow_provider_expand.engine.ledger.store import Ledger
from airflow_provider_expand.operators.phase_sql import PhaseSQLOperator


@pytest.fixture
def products(pg_conn: psycopg.Connection) -> psycopg.Connection:
    pg_conn.execute("CREATE TABLE products (id bigint PRIMARY KEY, title text)")
    pg_conn.execute("INSERT INTO products SELECT g, 'p' || g FROM generate_series(1, 100) g")
    return pg_conn


def _columns(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'products'"
    ).fetchall()
    return {r[0] for r in rows}


def _operator(sql_file: Path | str, **kwargs: Any) -> PhaseSQLOperator:
    args: dict[str, Any] = {
        "task_id": "expand",
        "migration_id": "m",
        "phase": "expand",
        "sql_file": str(sql_file),
        "postgres_conn_id": "app_db",
        "lock_timeout": timedelta(seconds=2),
        "ddl_retries": 3,
        **kwargs,
    }
    return PhaseSQLOperator(**args)


NO_CONTEXT = cast(Context, {})


def test_execute_applies_the_phase_through_the_airflow_connection(
    airflow_conn: dict[str, str], products: psycopg.Connection, tmp_path: Path
) -> None:
    sql_file = tmp_path / "expand.sql"
    sql_file.write_text(
        "ALTER TABLE products ADD COLUMN name text;\n"
        "CREATE INDEX CONCURRENTLY idx_products_name ON products (name);\n"
    )
    summary = _operator(sql_file).execute(NO_CONTEXT)
    assert summary == {
        "step": "expand",
        "groups": 2,
        "applied": 2,
        "skipped": 0,
        "lock_retries": 0,
        "dry_run": False,
    }
    assert "name" in _columns(products)
    record, step = Ledger().get(products, "m"), Ledger().step(products, "m", "expand")
    assert record is not None and record.phase == "expanded" and record.expanded_at is not None
    assert step is not None and step.status == "success" and step.rows_done == 2
    # a retry of the task after success is a no-op
    assert _operator(sql_file).execute(NO_CONTEXT)["applied"] == 0


def test_dry_run_from_a_string_changes_nothing_and_bad_values_are_refused(
    airflow_conn: dict[str, str], products: psycopg.Connection, tmp_path: Path
) -> None:
    sql_file = tmp_path / "contract.sql"
    sql_file.write_text("ALTER TABLE products DROP COLUMN title;\n")
    summary = _operator(sql_file, phase="contract", dry_run="True").execute(NO_CONTEXT)
    assert summary["dry_run"] is True and summary["applied"] == 0
    assert "title" in _columns(products)
    assert not Ledger().installed(products)
    with pytest.raises(ValueError, match=r"expand: dry_run: expected a boolean, got 'maybe'"):
        _operator(sql_file, dry_run="maybe").execute(NO_CONTEXT)


def test_bad_arguments_fail_when_the_dag_is_parsed(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="phase must be one of expand, contract, rollback"):
        _operator(tmp_path / "x.sql", phase="backfill")
    with pytest.raises(ValueError, match="lock_timeout must be positive"):
        _operator(tmp_path / "x.sql", lock_timeout=timedelta(0))
    with pytest.raises(FileNotFoundError, match=r"sql_file 'nowhere/expand\.sql' not found"):
        _operator("nowhere/expand.sql").sql_path()


_DAG = """
from datetime import datetime, timedelta
from airflow.sdk import DAG, TriggerRule
from airflow_provider_expand.operators.phase_sql import PhaseSQLOperator

common = dict(migration_id="m", postgres_conn_id="app_db", lock_timeout=timedelta(seconds=1), ddl_retries=2)
with DAG("{dag_id}", schedule=None, start_date=datetime(2025, 1, 1), render_template_as_native_obj=True,
         params={{"dry_run": False}}):
    expand = PhaseSQLOperator(task_id="expand", phase="expand", sql_file="{folder}/expand.sql",
                              dry_run="{{{{ params.dry_run }}}}", **common)
    rollback = PhaseSQLOperator(task_id="rollback", phase="rollback", sql_file="{folder}/rollback.sql",
                                trigger_rule=TriggerRule.ONE_FAILED, **common)
    expand >> rollback
"""


def test_in_a_dag_a_failed_expand_is_rolled_back_by_the_rollback_task(
    airflow_home: Path, airflow_conn: dict[str, str], products: psycopg.Connection
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    dag_id = f"phase_sql_{uuid.uuid4().hex[:8]}"
    folder = airflow_home / "dags" / dag_id  # SQL beside the DAG file, named relative to it
    folder.mkdir()
    (folder / "expand.sql").write_text(
        "ALTER TABLE products ADD COLUMN name text;\n"
        "CREATE INDEX CONCURRENTLY idx_products_name ON products (name);\n"
        "ALTER TABLE products ADD COLUMN name text;\n"  # line 3 fails: group 3 rolls back
    )
    (folder / "rollback.sql").write_text(
        "DROP INDEX CONCURRENTLY IF EXISTS idx_products_name;\nALTER TABLE products DROP COLUMN IF EXISTS name;\n"
    )
    dag_file = airflow_home / "dags" / f"{dag_id}.py"
    dag_file.write_text(textwrap.dedent(_DAG.format(dag_id=dag_id, folder=dag_id)))
    bag = DagBag(dag_folder=str(dag_file))
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag(dag_id)
    assert dag is not None

    run = dag.test(logical_date=None)
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == {"expand": "failed", "rollback": "success"}
    assert "name" not in _columns(products)
    ledger = Ledger()
    record = ledger.get(products, "m")
    assert record is not None and record.phase == "rolled_back" and record.run_id == run.run_id
    expand = ledger.step(products, "m", "expand")
    assert expand is not None and expand.status == "failed" and expand.error is not None
    assert expand.error.startswith("expand.sql:3: ") and "already exists" in expand.error
