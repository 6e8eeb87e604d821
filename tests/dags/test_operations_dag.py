"""A migration given as pgroll operations, end to end through ``dag.test()``: expand, backfill, index,
soak, contract, with an old-code writer (tables) and a new-code writer (``search_path`` = the version
schema) running meanwhile; then a failure after the expand, which rolls back to the same schema."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

from airflow_provider_expand.engine.ledger.store import Ledger
from tests.dags.harness import install_dag_file, run_dag, states
from tests.engine.operations.conftest import build, dump_schema, fresh_database

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


def _folder(tmp: Path, migration_id: str, **extra: Any) -> Path:
    folder = tmp / "migrations" / migration_id
    folder.mkdir(parents=True)
    spec = {
        "id": migration_id,
        "postgres_conn_id": "app_db",
        "lock_timeout": "500ms",
        "retries": 0,
        "soak": "2s",
        "operations": OPERATIONS,
        **extra,
    }
    (folder / "migration.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder


class _Writer(threading.Thread):
    """One code version writing until stopped or until the contract removed what it writes (old code)."""

    def __init__(self, dsn: str, version_schema: str | None, migration_id: str) -> None:
        super().__init__(daemon=True)
        self.dsn, self.version_schema, self.migration_id = dsn, version_schema, migration_id
        self.stop = threading.Event()
        self.inserted: list[int] = []
        self.errors: list[str] = []
        self.gone = False

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            i = 0
            while not self.stop.is_set() and not self.gone:
                i += 1
                try:
                    if self.version_schema is None:  # old code: old names, legacy_code still written
                        row = conn.execute(
                            "INSERT INTO products (title, legacy_code) VALUES (%s, 'old') RETURNING id",
                            (f"Old Writer {i}",),
                        ).fetchone()
                    else:
                        path = conn.execute("SELECT to_regnamespace(%s)", (self.version_schema,)).fetchone()
                        if not path or path[0] is None:  # the expand has not created the views yet
                            time.sleep(0.05)
                            continue
                        conn.execute(
                            sql.SQL("SET search_path = {}").format(sql.Identifier(self.version_schema))
                        )
                        row = conn.execute(
                            "INSERT INTO products (name, slug) VALUES (%s, %s) RETURNING id",
                            (f"New Writer {i}", f"own-slug-{i}"),
                        ).fetchone()
                    assert row is not None
                    self.inserted.append(int(row[0]))
                except psycopg.Error as exc:
                    if self.version_schema is None and self._contracting():
                        self.gone = True  # the contract ended the old code's schema: it is gone by then
                    else:
                        self.errors.append(str(exc))
                time.sleep(0.01)

    def _contracting(self) -> bool:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            record = Ledger().get(conn, self.migration_id)
        return record is not None and record.phase in ("contracting", "completed")


@pytest.fixture
def reference_dsn(pg_server_dsn: str) -> Iterator[str]:
    with fresh_database(pg_server_dsn) as dsn:
        yield dsn


@pytest.fixture
def migration_id() -> str:
    return f"ops_e2e_{uuid.uuid4().hex[:8]}"


def test_operations_migration_runs_to_completion_with_both_code_versions_writing(
    tmp_path: Path,
    airflow_home: Path,
    airflow_conn: dict[str, str],
    pg_dsn: str,
    reference_dsn: str,
    migration_id: str,
) -> None:
    build(pg_dsn, BEFORE)
    folder = _folder(tmp_path, migration_id)
    dag_file = install_dag_file(airflow_home, folder.parent, migration_id)
    old, new = _Writer(pg_dsn, None, migration_id), _Writer(pg_dsn, migration_id, migration_id)
    old.start()
    new.start()
    try:
        run = run_dag(dag_file, migration_id)
    finally:
        old.stop.set()
        new.stop.set()
        old.join(10)
        new.join(10)
    result = states(run)
    assert str(run.state) == "success", result
    assert {k: v for k, v in result.items() if k.startswith(("backfill", "index"))} == {
        "backfill.products": "success",
        "index.idx_products_slug": "success",
    }
    assert not old.errors and not new.errors, (old.errors, new.errors)
    assert old.gone and old.inserted and new.inserted
    build(reference_dsn, AFTER)
    assert dump_schema(pg_dsn) == dump_schema(reference_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(migration_id)))
        # the old code's rows got their slug from up (trigger during the soak, backfill for the rows before)
        assert conn.execute("SELECT slug FROM products WHERE id = 7").fetchone() == ("product-7",)
        got = conn.execute("SELECT slug FROM products WHERE id = %s", (old.inserted[0],)).fetchone()
        assert got is not None and got[0].startswith("old-writer-")
        got = conn.execute("SELECT slug FROM products WHERE id = %s", (new.inserted[0],)).fetchone()
        assert got is not None and got[0].startswith("own-slug-")  # the new code's own value, kept
        record = Ledger().get(conn, migration_id)
        assert record is not None and record.phase == "completed"


def test_failure_after_expand_rolls_back_to_the_same_schema(
    tmp_path: Path, airflow_home: Path, airflow_conn: dict[str, str], pg_dsn: str, migration_id: str
) -> None:
    build(pg_dsn, BEFORE)
    before = dump_schema(pg_dsn)
    failing = {"name": "injected failure", "sql": "SELECT 1", "expect": 2, "after": "expand"}
    folder = _folder(tmp_path, migration_id, verify=[failing])
    dag_file = install_dag_file(airflow_home, folder.parent, migration_id)
    run = run_dag(dag_file, migration_id)
    result = states(run)
    assert str(run.state) == "failed", result
    assert result["expand"] == "success" and result["rollback"] == "success", result
    assert result["contract"] == "upstream_failed", result
    assert dump_schema(pg_dsn) == before
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT to_regnamespace(%s)", (migration_id,)).fetchone() == (None,)
        record = Ledger().get(conn, migration_id)
        assert record is not None and record.phase == "rolled_back"


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
    folder = _folder(tmp_path, migration_id)
    dag_file = install_dag_file(airflow_home, folder.parent, migration_id)
    run = run_dag(dag_file, migration_id)
    result = states(run)
    assert str(run.state) == "failed" and result["begin"] == "failed", result
    assert result["expand"] == "upstream_failed", result
    assert dump_schema(pg_dsn) == before
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert Ledger().get(conn, migration_id) is None  # refused before anything was recorded
