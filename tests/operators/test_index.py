"""``ConcurrentIndexOperator`` / ``DropIndexConcurrentlyOperator`` through a real Airflow connection."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest
from airflow.sdk import DAG, Context

from airflow_provider_expand.engine.index.build import IndexBuildError
from airflow_provider_expand.engine.ledger.store import Ledger
from airflow_provider_expand.operators.index import ConcurrentIndexOperator, DropIndexConcurrentlyOperator

FAST: dict[str, Any] = {
    "lock_timeout": dt.timedelta(milliseconds=500),
    "progress_interval": dt.timedelta(seconds=1),
}
NO_CONTEXT: Context = {}


@pytest.fixture
def products(pg_conn: psycopg.Connection) -> psycopg.Connection:
    pg_conn.execute("CREATE TABLE products (id bigint PRIMARY KEY, name text, deleted_at timestamptz)")
    pg_conn.execute("INSERT INTO products SELECT g, 'p' || g, NULL FROM generate_series(1, 1000) g")
    return pg_conn


def _index_op(conn_id: str, **kwargs: Any) -> ConcurrentIndexOperator:
    fields: dict[str, Any] = {
        "task_id": "index.idx_products_name",
        "migration_id": "products_title_to_name",
        "postgres_conn_id": conn_id,
        "name": "idx_products_name",
        "table": "products",
        "columns": ["name"],
        "where": "deleted_at IS NULL",
    }
    return ConcurrentIndexOperator(**(fields | FAST | kwargs))


def _valid(conn: psycopg.Connection, index: str) -> bool | None:
    row = conn.execute(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", (index,)
    ).fetchone()
    return None if row is None else bool(row[0])


def test_builds_through_the_airflow_connection_and_is_idempotent(
    airflow_conn: dict[str, str], products: psycopg.Connection, capfd: pytest.CaptureFixture[str]
) -> None:
    built = _index_op(airflow_conn["postgres"]).execute(NO_CONTEXT)
    again = _index_op(airflow_conn["postgres"]).execute(NO_CONTEXT)

    assert built["index"] == "public.idx_products_name"
    assert (built["action"], built["builds"]) == ("created", 1)
    assert built["statements"] == [
        'CREATE INDEX CONCURRENTLY "idx_products_name" ON "public"."products" ("name") WHERE deleted_at IS NULL'
    ]
    assert (again["action"], again["builds"]) == ("exists", 0)
    assert _valid(products, "idx_products_name") is True
    step = Ledger().step(products, "products_title_to_name", "index:idx_products_name")
    assert step is not None and step.status == "success"
    out = capfd.readouterr().out
    assert "index public.idx_products_name: build 1 of at most 3" in out  # through self.log
    assert "matches the spec: nothing to do" in out


def test_dry_run_accepts_strings_and_native_rendering(
    airflow_conn: dict[str, str], products: psycopg.Connection
) -> None:
    as_text = _index_op(airflow_conn["postgres"], dry_run="True").execute(NO_CONTEXT)
    assert as_text["action"] == "dry_run" and _valid(products, "idx_products_name") is None

    with DAG("idx_dry_run", schedule=None, render_template_as_native_obj=True):
        templated = _index_op(airflow_conn["postgres"], dry_run="{{ params.dry_run }}")
    templated.render_template_fields({"params": {"dry_run": True}})
    assert templated.is_dry_run is True
    assert templated.execute(NO_CONTEXT)["action"] == "dry_run"
    assert _valid(products, "idx_products_name") is None
    assert products.execute("SELECT to_regnamespace('airflow_expand')").fetchone() == (None,)

    built = _index_op(airflow_conn["postgres"], dry_run="False").execute(NO_CONTEXT)
    assert built["action"] == "created" and _valid(products, "idx_products_name") is True


def test_a_failed_unique_build_fails_the_task_with_the_duplicate_key(
    airflow_conn: dict[str, str], products: psycopg.Connection
) -> None:
    products.execute("UPDATE products SET name = 'same' WHERE id IN (3, 4)")
    op = _index_op(airflow_conn["postgres"], unique=True, where=None, max_rebuilds=0)

    with pytest.raises(IndexBuildError, match=r"Key \(name\)=\(same\) is duplicated"):
        op.execute(NO_CONTEXT)
    assert _valid(products, "idx_products_name") is None


def test_drop_operator_is_idempotent(airflow_conn: dict[str, str], products: psycopg.Connection) -> None:
    products.execute("CREATE INDEX idx_products_old ON products (name)")

    def drop(**kwargs: Any) -> dict[str, Any]:
        return DropIndexConcurrentlyOperator(
            task_id="contract.drop_idx_products_old",
            migration_id="products_title_to_name",
            postgres_conn_id=airflow_conn["postgres"],
            name="idx_products_old",
            **(FAST | kwargs),
        ).execute(NO_CONTEXT)

    assert drop(dry_run="true")["action"] == "dry_run"
    assert _valid(products, "idx_products_old") is True
    assert drop()["action"] == "dropped"
    assert drop(schema="public")["action"] == "absent"
    assert _valid(products, "idx_products_old") is None
