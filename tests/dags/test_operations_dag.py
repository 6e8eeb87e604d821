"""A migration given as pgroll operations, end to end through ``dag.test()``: expand, backfill, index,
soak, contract, with an old-code writer (tables) and a new-code writer (``search_path`` = the version
schema) running meanwhile; then a failure after the expand, which rolls back to the same schema."""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql

from airflow_provider_expand.engine.ledger.store import Ledger
from tests.dags.harness import run_dag, states
from tests.dags.operations_support import (
    fail_after_expand,
    install_migration,
    ledger_phase,
    migrate_with_both_writing,
)
from tests.engine.operations.conftest import build, dump_schema

BEFORE = """
CREATE TABLE products (id bigserial PRIMARY KEY, title text NOT NULL, price int NOT NULL DEFAULT 0,
                       legacy_code text NOT NULL);
CREATE INDEX products_legacy ON products (legacy_code);
INSERT INTO products (title, legacy_code) SELECT 'Product ' || g, 'L' || g FROM generate_series(1, 3000) g;
"""
OPERATIONS = [
    {"rename_column": {"table": "products", "from": "title", "to": "name"}},
    {
        "add_column": {
            "table": "products",
            "up": "lower(replace(name, ' ', '-'))",
            "column": {"name": "slug", "type": "text", "nullable": False},
        }
    },
    {"drop_index": {"name": "products_legacy"}},
    {"drop_column": {"table": "products", "column": "legacy_code", "down": "'from-new-code'"}},
    {"create_index": {"name": "idx_products_slug", "table": "products", "columns": ["slug"], "unique": True}},
    {
        "create_table": {
            "name": "reviews",
            "columns": [
                {"name": "id", "type": "bigserial", "pk": True},
                {
                    "name": "product_id",
                    "type": "bigint",
                    "references": {"name": "fk_review_product", "table": "products", "column": "id"},
                },
                {"name": "body", "type": "text", "nullable": True},
            ],
        }
    },
]
AFTER = """
CREATE TABLE products (id bigserial PRIMARY KEY, name text NOT NULL, price int NOT NULL DEFAULT 0);
ALTER TABLE products ADD COLUMN slug text NOT NULL;
CREATE UNIQUE INDEX idx_products_slug ON products (slug);
CREATE TABLE reviews (id bigserial PRIMARY KEY,
                      product_id bigint NOT NULL CONSTRAINT fk_review_product REFERENCES products (id), body text);
"""


OLD_CODE = {  # old names, legacy_code still written
    "insert": "INSERT INTO products (title, legacy_code) VALUES ('Old Writer ' || %(i)s::text, 'old') RETURNING id"
}
NEW_CODE = {
    "insert": "INSERT INTO products (name, slug) VALUES ('New Writer ' || %(i)s::text, 'own-slug-' || %(i)s::text) "
    "RETURNING id"
}


def test_operations_migration_runs_to_completion_with_both_code_versions_writing(
    tmp_path: Path,
    airflow_home: Path,
    airflow_conn: dict[str, str],
    pg_dsn: str,
    reference_dsn: str,
    migration_id: str,
) -> None:
    result, old, new = migrate_with_both_writing(
        tmp_path, airflow_home, pg_dsn, migration_id, BEFORE, OPERATIONS, OLD_CODE, NEW_CODE
    )
    assert {k: v for k, v in result.items() if k.startswith(("backfill", "index"))} == {
        "backfill.products": "success",
        "index.idx_products_slug": "success",
    }
    assert old.gone and old.rows["insert"] and new.rows["insert"]
    build(reference_dsn, AFTER)
    assert dump_schema(pg_dsn) == dump_schema(reference_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(migration_id)))
        # the old code's rows got their slug from up (trigger during the soak, backfill for the rows before)
        assert conn.execute("SELECT slug FROM products WHERE id = 7").fetchone() == ("product-7",)
        got = conn.execute("SELECT slug FROM products WHERE id = %s", (old.ids("insert")[0],)).fetchone()
        assert got is not None and got[0].startswith("old-writer-")
        got = conn.execute("SELECT slug FROM products WHERE id = %s", (new.ids("insert")[0],)).fetchone()
        assert got is not None and got[0].startswith("own-slug-")  # the new code's own value, kept
    assert ledger_phase(pg_dsn, migration_id) == "completed"


def test_failure_after_expand_rolls_back_to_the_same_schema(
    tmp_path: Path, airflow_home: Path, airflow_conn: dict[str, str], pg_dsn: str, migration_id: str
) -> None:
    fail_after_expand(tmp_path, airflow_home, pg_dsn, migration_id, BEFORE, OPERATIONS)


def test_begin_refuses_while_another_migration_holds_the_table(
    tmp_path: Path, airflow_home: Path, airflow_conn: dict[str, str], pg_dsn: str, migration_id: str
) -> None:
    from airflow_provider_expand.engine.ledger.holds import claim
    from airflow_provider_expand.engine.lifecycle import Event, Lifecycle

    build(pg_dsn, BEFORE)
    before = dump_schema(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # another migration, mid-soak on products
        lifecycle = Lifecycle(Ledger())
        lifecycle.ledger.ensure(conn)
        claim(conn, "airflow_expand", "other_migration", ["products"])
        for event in (Event.BEGIN, Event.EXPAND_STARTED, Event.EXPANDED):
            lifecycle.move(conn, "other_migration", event)
    dag_file = install_migration(tmp_path, airflow_home, migration_id, OPERATIONS)
    run = run_dag(dag_file, migration_id)
    result = states(run)
    assert str(run.state) == "failed" and result["begin"] == "failed", result
    assert result["expand"] == "upstream_failed", result
    assert dump_schema(pg_dsn) == before
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert Ledger().get(conn, migration_id) is None  # refused before anything was recorded
