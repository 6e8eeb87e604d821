"""rename_table, create_constraint (unique, check, foreign_key), drop_constraint, drop_multicolumn_constraint,
drop_table and sql end to end through ``dag.test()``: expand, backfill, index, soak, contract with an old-code
writer (tables) and a new-code writer (the version schema) running meanwhile, each reading what the other
wrote; then a failure after a sql operation's expand, which its ``down`` rolls back to the same schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from tests.dags.operations_support import (
    fail_after_expand,
    ledger_phase,
    migrate_with_both_writing,
)
from tests.engine.operations.conftest import build, dump_schema

CONSTRAINTS_BEFORE = """
CREATE TABLE products (id bigserial PRIMARY KEY, title text NOT NULL);
CREATE TABLE orders (id bigserial PRIMARY KEY, product_id bigint, sku text NOT NULL, qty int NOT NULL DEFAULT 1);
INSERT INTO products (title) SELECT 'Product ' || g FROM generate_series(1, 100) g;
INSERT INTO orders (product_id, sku, qty)
SELECT CASE WHEN g % 10 = 0 THEN 100000 + g ELSE 1 + g % 100 END, 'sku' || (g % 50), g % 4
FROM generate_series(1, 2000) g;
"""
EXISTING_ITEM = (
    "SELECT CASE WHEN EXISTS (SELECT 1 FROM products p WHERE p.id = product_id) THEN product_id END"
)
CONSTRAINTS: list[dict[str, Any]] = [
    {"rename_table": {"from": "products", "to": "items"}},
    {
        "create_constraint": {
            "type": "unique",
            "table": "orders",
            "name": "orders_sku_unique",
            "columns": ["sku"],
            "up": {"sku": "sku || '-' || id"},
            "down": {"sku": "sku"},
        }
    },
    {
        "create_constraint": {
            "type": "check",
            "table": "orders",
            "name": "orders_qty_positive",
            "columns": ["qty"],
            "check": "qty > 0",
            "up": {"qty": "GREATEST(qty, 1)"},
            "down": {"qty": "qty"},
        }
    },
    {
        "create_constraint": {
            "type": "foreign_key",
            "table": "orders",
            "name": "fk_orders_item",
            "columns": ["product_id"],
            "references": {"table": "items", "columns": ["id"]},
            "up": {"product_id": EXISTING_ITEM},
            "down": {"product_id": "product_id"},
        }
    },
]
CONSTRAINTS_AFTER = """
CREATE TABLE items (id bigserial PRIMARY KEY, title text NOT NULL);
ALTER INDEX items_pkey RENAME TO products_pkey;
ALTER SEQUENCE items_id_seq RENAME TO products_id_seq;
CREATE TABLE orders (id bigserial PRIMARY KEY, sku text NOT NULL, qty int NOT NULL DEFAULT 1, product_id bigint,
                     CONSTRAINT orders_sku_unique UNIQUE (sku),
                     CONSTRAINT orders_qty_positive CHECK (qty > 0),
                     CONSTRAINT fk_orders_item FOREIGN KEY (product_id) REFERENCES items (id));
"""
CONSTRAINTS_OLD_CODE = {  # the old table name; a dangling product, a duplicate sku, a zero qty
    "item": "INSERT INTO products (title) VALUES ('old ' || %(i)s::text) RETURNING id",
    "order": "INSERT INTO orders (product_id, sku, qty) VALUES (999999, 'dup', 0) RETURNING id",
    "sees_items": "SELECT count(*) FROM products WHERE title LIKE 'new %%'",
    "sees_order": "SELECT product_id, sku, qty FROM orders WHERE sku LIKE 'new-%%' ORDER BY id DESC LIMIT 1",
}
CONSTRAINTS_NEW_CODE = {  # the new name through the view; values that meet the new constraints
    "item": "INSERT INTO items (title) VALUES ('new ' || %(i)s::text) RETURNING id",
    "order": "INSERT INTO orders (product_id, sku, qty) VALUES (2, 'new-' || %(i)s::text, 5) RETURNING id",
    "sees_items": "SELECT count(*) FROM items WHERE title LIKE 'old %%'",
    "sees_order": "SELECT id, product_id, sku, qty FROM orders WHERE sku LIKE 'dup-%%' ORDER BY id DESC LIMIT 1",
}


def test_rename_table_and_create_constraints_with_both_code_versions_writing(
    tmp_path: Path,
    airflow_home: Path,
    airflow_conn: dict[str, str],
    pg_dsn: str,
    reference_dsn: str,
    migration_id: str,
) -> None:
    result, old, new = migrate_with_both_writing(
        tmp_path,
        airflow_home,
        pg_dsn,
        migration_id,
        CONSTRAINTS_BEFORE,
        CONSTRAINTS,
        CONSTRAINTS_OLD_CODE,
        CONSTRAINTS_NEW_CODE,
    )
    assert {k: v for k, v in result.items() if k.startswith(("backfill", "index"))} == {
        "backfill.orders": "success",
        "index.orders_sku_unique": "success",
    }
    assert old.gone and old.rows["order"] and new.rows["order"]
    build(reference_dsn, CONSTRAINTS_AFTER)
    assert dump_schema(pg_dsn) == dump_schema(reference_dsn)
    # each version saw the other's rows during the soak: rename_table under both names, and the copies'
    # up (old code's dangling product, duplicate sku, zero qty made valid) and down (new code's values)
    assert max(n for (n,) in old.rows["sees_items"]) > 0 and max(n for (n,) in new.rows["sees_items"]) > 0
    assert old.rows["sees_order"] and all(
        product == 2 and sku.startswith("new-") and qty == 5 for product, sku, qty in old.rows["sees_order"]
    ), old.rows["sees_order"][:3]
    assert new.rows["sees_order"] and all(
        (product, sku, qty) == (None, f"dup-{id_}", 1) for id_, product, sku, qty in new.rows["sees_order"]
    ), new.rows["sees_order"][:3]
    items = old.ids("item") + new.ids("item")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # after the contract: the final names
        assert conn.execute("SELECT count(*) FROM items WHERE id = ANY(%s)", (items,)).fetchone() == (
            len(set(items)),
        )
        backfilled = conn.execute("SELECT product_id, sku, qty FROM orders WHERE id IN (4, 10) ORDER BY id")
        assert backfilled.fetchall() == [(5, "sku4-4", 1), (None, "sku10-10", 2)]
        got = conn.execute("SELECT product_id, sku, qty FROM orders WHERE id = %s", (old.ids("order")[0],))
        assert got.fetchone() == (None, f"dup-{old.ids('order')[0]}", 1)
        got = conn.execute("SELECT product_id, sku, qty FROM orders WHERE id = %s", (new.ids("order")[0],))
        assert got.fetchone() == (2, "new-1", 5)
    assert ledger_phase(pg_dsn, migration_id) == "completed"


DROPS_BEFORE = """
CREATE TABLE posts (id bigserial PRIMARY KEY, title text NOT NULL CONSTRAINT title_length CHECK (length(title) > 3),
                    a int, b int, CONSTRAINT a_below_b CHECK (a < b));
CREATE TABLE legacy (id bigserial PRIMARY KEY, note text);
INSERT INTO posts (title, a, b) SELECT 'title ' || g, g, g + 1 FROM generate_series(1, 2000) g;
"""
DROPS: list[dict[str, Any]] = [
    {
        "drop_constraint": {
            "table": "posts",
            "name": "title_length",
            "up": "title",
            "down": "SELECT CASE WHEN length(title) <= 3 THEN LPAD(title, 4, '-') ELSE title END",
        }
    },
    {
        "drop_multicolumn_constraint": {
            "table": "posts",
            "name": "a_below_b",
            "up": {"a": "a", "b": "b"},
            "down": {"a": "LEAST(a, b - 1)", "b": "b"},
        }
    },
    {"drop_table": {"name": "legacy"}},
    {  # written with the final names: the contract runs it after its renames of the copies
        "sql": {
            "up": "CREATE INDEX CONCURRENTLY posts_title ON posts (title); "
            "COMMENT ON COLUMN posts.title IS 'no length check since the contract'",
            "onComplete": True,
        }
    },
]
DROPS_AFTER = """
CREATE TABLE posts (id bigserial PRIMARY KEY, title text NOT NULL, a int, b int);
CREATE INDEX posts_title ON posts (title);
COMMENT ON COLUMN posts.title IS 'no length check since the contract';
"""
DROPS_OLD_CODE = {  # values that meet the constraints old code still has; the table new code dropped
    "post": "INSERT INTO posts (title, a, b) VALUES ('old title ' || %(i)s::text, 1, 2) RETURNING id",
    "legacy": "INSERT INTO legacy (note) VALUES ('still used') RETURNING id",
    "sees_post": "SELECT title, a, b FROM posts WHERE title = '--ab' ORDER BY id DESC LIMIT 1",
}
DROPS_NEW_CODE = {  # what the dropped constraints refused: a short title, a >= b
    "post": "INSERT INTO posts (title, a, b) VALUES ('ab', 5, 3) RETURNING id",
    "sees_post": "SELECT title, a, b FROM posts WHERE title LIKE 'old title %%' ORDER BY id DESC LIMIT 1",
    "sees_legacy": "SELECT count(*) FROM pg_views WHERE schemaname = current_schema() AND viewname = 'legacy'",
}


def test_drop_constraints_drop_table_and_on_complete_sql_with_both_code_versions_writing(
    tmp_path: Path,
    airflow_home: Path,
    airflow_conn: dict[str, str],
    pg_dsn: str,
    reference_dsn: str,
    migration_id: str,
) -> None:
    result, old, new = migrate_with_both_writing(
        tmp_path, airflow_home, pg_dsn, migration_id, DROPS_BEFORE, DROPS, DROPS_OLD_CODE, DROPS_NEW_CODE
    )
    assert {k: v for k, v in result.items() if k.startswith(("backfill", "index"))} == {
        "backfill.posts": "success"
    }
    assert old.gone and old.rows["legacy"] and new.rows["post"]
    build(reference_dsn, DROPS_AFTER)
    assert dump_schema(pg_dsn) == dump_schema(reference_dsn)
    # down made new code's rows valid for old code's constraints; old code's rows reached new code as written
    assert old.rows["sees_post"] and set(old.rows["sees_post"]) == {("--ab", 2, 3)}
    assert new.rows["sees_post"] and all(
        title.startswith("old title ") and (a, b) == (1, 2) for title, a, b in new.rows["sees_post"]
    )
    assert new.rows["sees_legacy"] and set(new.rows["sees_legacy"]) == {(0,)}  # no view of the dropped table
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        got = conn.execute("SELECT title, a, b FROM posts WHERE id = %s", (new.ids("post")[0],))
        assert got.fetchone() == ("ab", 5, 3)  # the copies, without the constraints, are the columns now
        got = conn.execute("SELECT title, a, b FROM posts WHERE id = %s", (old.ids("post")[0],))
        assert got.fetchone() == ("old title 1", 1, 2)
        assert conn.execute("SELECT title, a, b FROM posts WHERE id = 7").fetchone() == ("title 7", 7, 8)
    assert ledger_phase(pg_dsn, migration_id) == "completed"


SQL_BEFORE = """
CREATE TABLE notes (id bigserial PRIMARY KEY, body text NOT NULL);
INSERT INTO notes (body) SELECT 'note ' || g FROM generate_series(1, 500) g;
"""
SQL: list[dict[str, Any]] = [
    {
        "sql": {
            "up": "ALTER TABLE notes ADD COLUMN author text; "
            "CREATE TABLE tags (id bigserial PRIMARY KEY, note_id bigint NOT NULL, tag text NOT NULL)",
            "down": "DROP TABLE IF EXISTS tags; ALTER TABLE notes DROP COLUMN IF EXISTS author",
        }
    }
]
SQL_AFTER = """
CREATE TABLE notes (id bigserial PRIMARY KEY, body text NOT NULL, author text);
CREATE TABLE tags (id bigserial PRIMARY KEY, note_id bigint NOT NULL, tag text NOT NULL);
"""
SQL_OLD_CODE = {  # knows neither the new column nor the new table
    "note": "INSERT INTO notes (body) VALUES ('old ' || %(i)s::text) RETURNING id",
    "sees_new": "SELECT count(*) FROM notes WHERE body LIKE 'new %%'",
}
SQL_NEW_CODE = {
    "note": "INSERT INTO notes (body, author) VALUES ('new ' || %(i)s::text, 'me') RETURNING id",
    "tag": "INSERT INTO tags (note_id, tag) SELECT max(id), 't' || %(i)s::text FROM notes RETURNING id",
    "sees_old": "SELECT count(*) FROM notes WHERE body LIKE 'old %%' AND author IS NULL",
}


def test_sql_operation_runs_to_completion_with_both_code_versions_writing(
    tmp_path: Path,
    airflow_home: Path,
    airflow_conn: dict[str, str],
    pg_dsn: str,
    reference_dsn: str,
    migration_id: str,
) -> None:
    _, old, new = migrate_with_both_writing(
        tmp_path, airflow_home, pg_dsn, migration_id, SQL_BEFORE, SQL, SQL_OLD_CODE, SQL_NEW_CODE
    )
    assert not old.gone  # the contract changed nothing old code uses
    assert old.rows["note"] and new.rows["tag"]
    assert max(n for (n,) in old.rows["sees_new"]) > 0 and max(n for (n,) in new.rows["sees_old"]) > 0
    build(reference_dsn, SQL_AFTER)
    assert dump_schema(pg_dsn) == dump_schema(reference_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(migration_id)))
        # the version schema was read from the catalog after up ran: its views show the new column and table
        got = conn.execute("SELECT author FROM notes WHERE id = %s", (new.ids("note")[0],))
        assert got.fetchone() == ("me",)
        got = conn.execute("SELECT count(*) FROM tags WHERE id = ANY(%s)", (new.ids("tag"),))
        assert got.fetchone() == (len(new.rows["tag"]),)
    assert ledger_phase(pg_dsn, migration_id) == "completed"


def test_failure_after_a_sql_operations_expand_runs_its_down_back_to_the_same_schema(
    tmp_path: Path, airflow_home: Path, airflow_conn: dict[str, str], pg_dsn: str, migration_id: str
) -> None:
    fail_after_expand(tmp_path, airflow_home, pg_dsn, migration_id, SQL_BEFORE, SQL)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # down dropped what up made; the rows stayed
        assert conn.execute("SELECT to_regclass('public.tags')").fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM notes").fetchone() == (500,)
