"""``BatchBackfillOperator`` through a real Airflow connection: alone, templated, and mapped in a DAG."""

from __future__ import annotations

import datetime as dt
import socket
import textwrap
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from airflow.sdk import DAG, Connection, Context

from airflow_provider_expand.engine.backfill.run import BackfillInputError, BackfillRowError
from airflow_provider_expand.engine.errors import (
    DatabaseStatementError,
    DatabaseUnavailableError,
    DefinitiveError,
    TransientError,
)
from airflow_provider_expand.engine.ledger.store import Ledger
from airflow_provider_expand.operators.backfill import BatchBackfillOperator

NO_CONTEXT: Context = {}


@pytest.fixture
def products(pg_conn: psycopg.Connection) -> psycopg.Connection:
    pg_conn.execute("CREATE TABLE products (id bigint PRIMARY KEY, title text, name text)")
    pg_conn.execute("INSERT INTO products SELECT g, 'title ' || g, NULL FROM generate_series(1, 6000) g")
    return pg_conn


def _op(conn_id: str, **kwargs: Any) -> BatchBackfillOperator:
    fields: dict[str, Any] = {
        "task_id": "backfill.products",
        "migration_id": "products_title_to_name",
        "postgres_conn_id": conn_id,
        "table": "products",
        "set": "name = title",
        "where": "name IS NULL AND title IS NOT NULL",
        "pause": dt.timedelta(0),
    }
    return BatchBackfillOperator(**(fields | kwargs))


def _undone(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM products WHERE name IS DISTINCT FROM title").fetchone()
    assert row is not None
    return int(row[0])


def test_backfills_through_the_airflow_connection_with_text_params(
    airflow_conn: dict[str, str], products: psycopg.Connection, capfd: pytest.CaptureFixture[str]
) -> None:
    dry = _op(airflow_conn["postgres"], batch_size="700", dry_run="True").execute(NO_CONTEXT)
    assert dry["dry_run"] and dry["would_change"] == 6000 and _undone(products) == 6000

    done = _op(airflow_conn["postgres"], batch_size="700", dry_run="False").execute(NO_CONTEXT)
    assert (done["rows_done"], done["step"], done["part"]) == (6000, "backfill:products", 0)
    assert _undone(products) == 0
    step = Ledger().step(products, "products_title_to_name", "backfill:products")
    assert step is not None and step.status == "success" and step.rows_done == 6000
    out = capfd.readouterr().out
    assert "backfill:products: done, 6,000 rows" in out  # through self.log


def test_bad_params_name_the_field(airflow_conn: dict[str, str], products: psycopg.Connection) -> None:
    for fields, field in (
        ({"batch_size": "0"}, "batch_size"),
        ({"batch_size": "lots"}, "batch_size"),
        ({"dry_run": "maybe"}, "dry_run"),
        ({"partitions": 2, "partition": 2}, "partition"),
        ({"set": "name = title; DROP TABLE products"}, "set"),
    ):
        with pytest.raises(BackfillInputError) as caught:
            _op(airflow_conn["postgres"], **fields).execute(NO_CONTEXT)
        assert caught.value.field == field
    assert _undone(products) == 6000


def test_failures_leave_as_the_engines_transient_or_definitive_errors(
    airflow_conn: dict[str, str], products: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the DAG's retry policy matches on: a server that does not answer is transient, a set that
    raises is definitive (and names the table); neither leaves as a bare psycopg error."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = Connection(conn_id="dead_db", conn_type="postgres", host="127.0.0.1", port=port, login="postgres")
    monkeypatch.setenv("AIRFLOW_CONN_DEAD_DB", dead.as_json())
    with pytest.raises(DatabaseUnavailableError) as unavailable:
        _op("dead_db").execute(NO_CONTEXT)
    assert isinstance(unavailable.value, TransientError)

    with pytest.raises(BackfillRowError, match=r'"products" with key 4000: division by zero') as refused:
        _op(airflow_conn["postgres"], set="name = title || (1 / (id - 4000))::text").execute(NO_CONTEXT)
    assert isinstance(refused.value, DefinitiveError) and refused.value.sqlstate == "22012"
    assert isinstance(refused.value.__cause__, DatabaseStatementError)
    step = Ledger().step(products, "products_title_to_name", "backfill:products")
    assert step is not None and step.status == "failed" and "division by zero" in (step.error or "")


def test_a_dry_run_before_the_expand_warns_on_the_missing_column(
    airflow_conn: dict[str, str], products: psycopg.Connection
) -> None:
    result = _op(airflow_conn["postgres"], set="slug = title", where="slug IS NULL", dry_run=True).execute(
        NO_CONTEXT
    )
    assert result["dry_run"] and "slug" in result["unchecked"]
    with pytest.raises(BackfillInputError, match="slug"):
        _op(airflow_conn["postgres"], set="slug = title", where="slug IS NULL").execute(NO_CONTEXT)


def test_batch_size_and_dry_run_are_templated() -> None:
    with DAG("backfill_templates", schedule=None, render_template_as_native_obj=True):
        op = _op("app_db", batch_size="{{ params.batch_size or 10000 }}", dry_run="{{ params.dry_run }}")
    op.render_template_fields({"params": {"batch_size": 250, "dry_run": True}})
    assert (op.batch_size, op.is_dry_run) == (250, True)
    assert op.spec().batch_size == 250
    assert "set" not in op.template_fields and "where" not in op.template_fields


_DAG = """
from datetime import datetime, timedelta
from airflow.sdk import DAG
from airflow_provider_expand.operators.backfill import BatchBackfillOperator

with DAG("{dag_id}", schedule=None, start_date=datetime(2025, 1, 1), render_template_as_native_obj=True,
         params={{"dry_run": False, "batch_size": None}}):
    BatchBackfillOperator.partial(
        task_id="backfill.products", migration_id="{dag_id}", postgres_conn_id="app_db", table="products",
        set="name = title", where="name IS NULL AND title IS NOT NULL", partitions=2,
        batch_size="{{{{ params.batch_size or 1000 }}}}", pause=timedelta(0), dry_run="{{{{ params.dry_run }}}}",
    ).expand(partition=[0, 1])
"""


def test_partitions_run_as_mapped_tasks_in_a_dag(
    airflow_home: Path, airflow_conn: dict[str, str], products: psycopg.Connection
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    dag_id = f"backfill_{uuid.uuid4().hex[:8]}"
    dag_file = airflow_home / "dags" / f"{dag_id}.py"
    dag_file.write_text(textwrap.dedent(_DAG.format(dag_id=dag_id)))
    bag = DagBag(dag_folder=str(dag_file))
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag(dag_id)
    assert dag is not None

    run = dag.test(logical_date=None, run_conf={"batch_size": 400})
    assert run.state == "success"
    assert _undone(products) == 0
    steps = Ledger().steps(products, dag_id)
    assert sorted((s.part, s.status) for s in steps) == [(0, "success"), (1, "success")]
    assert sum(s.rows_done for s in steps) == 6000 and all(s.rows_done > 1000 for s in steps)
