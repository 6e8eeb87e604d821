"""The example migration's SQL, run by hand on the demo schema of a real PostgreSQL: expand keeps old and
new code consistent, backfill + contract finish the rename, and rollback restores the schema exactly.
(The DAG that runs it is tested end to end elsewhere; this pins down the SQL itself.)
"""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from airflow_provider_expand.engine.statements import load_statements, parse_statements
from airflow_provider_expand.spec import load_migration

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "dags" / "migrations" / "products_title_to_name"
DEMO_SCHEMA = REPO / "tests" / "fixtures" / "demo_schema.sql"

SCHEMA_SNAPSHOT = """
SELECT 'column', table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable
  FROM information_schema.columns WHERE table_schema = 'public'
UNION ALL SELECT 'constraint', conrelid::regclass || ' ' || pg_get_constraintdef(oid)
  FROM pg_constraint WHERE connamespace = 'public'::regnamespace
UNION ALL SELECT 'index', indexdef FROM pg_indexes WHERE schemaname = 'public'
UNION ALL SELECT 'trigger', tgname FROM pg_trigger WHERE NOT tgisinternal
UNION ALL SELECT 'function', proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace
UNION ALL SELECT 'policy', tablename || ' ' || policyname || ' ' || coalesce(qual, '') FROM pg_policies
ORDER BY 1, 2
"""


def run_phase(conn: psycopg.Connection, path: Path) -> None:
    """Like the DDL runner: CONCURRENTLY statements on their own, the others in one transaction per group."""
    group: list[str] = []

    def flush() -> None:
        if group:
            with conn.transaction():
                for statement in group:
                    conn.execute(statement)
            group.clear()

    for statement in load_statements(path):
        if statement.concurrently:
            flush()
            conn.execute(statement.sql)
        else:
            group.append(statement.sql)
    flush()


def setup_demo(conn: psycopg.Connection) -> tuple[uuid.UUID, uuid.UUID]:
    for statement in parse_statements(DEMO_SCHEMA.read_text(), "demo_schema.sql"):
        conn.execute(statement.sql)
    shop_a, shop_b = uuid.uuid4(), uuid.uuid4()
    conn.execute(
        "INSERT INTO shops (id, domain) VALUES (%s, 'a.myshopify.com'), (%s, 'b.myshopify.com')",
        (shop_a, shop_b),
    )
    conn.execute(
        "INSERT INTO products (shop_id, title, price)"
        " SELECT CASE WHEN i %% 2 = 0 THEN %s::uuid ELSE %s::uuid END, 'product ' || i,"
        "        CASE WHEN i %% 10 = 0 THEN NULL ELSE i * 1.25 END"
        "   FROM generate_series(1, 300) AS i",
        (shop_a, shop_b),
    )
    return shop_a, shop_b


def snapshot(conn: psycopg.Connection) -> list[tuple[str, str]]:
    return [(str(kind), str(text)) for kind, text in conn.execute(SCHEMA_SNAPSHOT).fetchall()]


def as_app_user(conn: psycopg.Connection, shop: uuid.UUID | str, query: str) -> int:
    with conn.transaction(force_rollback=True):
        conn.execute("SET LOCAL ROLE app_user")
        conn.execute("SELECT set_config('app.current_shop_id', %s, true)", (str(shop),))
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def test_expand_backfill_index_contract(pg_conn: psycopg.Connection) -> None:
    spec = load_migration(EXAMPLE)
    shop_a, _ = setup_demo(pg_conn)
    titles = dict(pg_conn.execute("SELECT id, title FROM products").fetchall())

    run_phase(pg_conn, EXAMPLE / "expand.sql")
    # old code keeps writing title and price; the trigger fills name and price_cents
    new_id = pg_conn.execute(
        "INSERT INTO products (shop_id, title, price) VALUES (%s, 'old code', 9.99) RETURNING id", (shop_a,)
    ).fetchone()[0]  # type: ignore[index]
    pg_conn.execute("UPDATE products SET title = 'renamed by old code', price = 2.50 WHERE id = 1")
    pg_conn.execute("UPDATE products SET price = 3 WHERE id = 2")  # not backfilled yet: name filled anyway
    # new code writes name only on some paths; title follows, so old code still reads it
    pg_conn.execute("UPDATE products SET name = 'renamed by new code' WHERE id = 3")
    pg_conn.execute(
        "INSERT INTO products (shop_id, name, title, price, price_cents) VALUES (%s, 'new code', 'new code', 1, 100)",
        (shop_a,),
    )
    rows = {
        r[0]: r[1:]
        for r in pg_conn.execute(
            "SELECT id, title, name, price_cents FROM products WHERE id IN (1, 2, 3, %s)", (new_id,)
        )
    }
    assert rows[1] == ("renamed by old code", "renamed by old code", 250)
    assert rows[2] == (titles[2], titles[2], 300)
    assert rows[3] == ("renamed by new code", "renamed by new code", 375)
    assert rows[new_id] == ("old code", "old code", 999)
    with pg_conn.transaction(force_rollback=True), pytest.raises(psycopg.errors.CheckViolation):
        # without the trigger, a row lacking name is refused: the NOT VALID check already guards new rows
        pg_conn.execute("ALTER TABLE products DISABLE TRIGGER products_sync_title_name")
        pg_conn.execute("INSERT INTO products (shop_id, title) VALUES (%s, 'no name')", (shop_a,))

    # backfill, exactly as the spec says (one pass here; the operator does it in batches)
    fill = spec.backfill[0]
    pg_conn.execute(
        sql.SQL("UPDATE {} SET {} WHERE {}").format(
            sql.Identifier(fill.table),
            sql.SQL(fill.set),
            sql.SQL(fill.where or "true"),  # type: ignore[arg-type]
        )
    )
    assert pg_conn.execute(
        sql.SQL("SELECT count(*) FROM products WHERE {}").format(sql.SQL(fill.where))
    ).fetchone() == (0,)  # type: ignore[arg-type]
    index = spec.indexes[0]
    pg_conn.execute(
        sql.SQL("CREATE INDEX CONCURRENTLY {} ON {} ({}) WHERE {}").format(
            sql.Identifier(index.name),
            sql.Identifier(index.table),
            sql.SQL(", ").join(map(sql.Identifier, index.columns)),
            sql.SQL(index.where),  # type: ignore[arg-type]
        )
    )
    before_contract = dict(pg_conn.execute("SELECT id, title FROM products").fetchall())

    run_phase(pg_conn, EXAMPLE / "contract.sql")
    columns = dict(
        pg_conn.execute(
            "SELECT column_name, is_nullable FROM information_schema.columns WHERE table_name = 'products'"
        ).fetchall()
    )
    assert "title" not in columns and columns["name"] == "NO" and "price_cents" in columns
    assert dict(pg_conn.execute("SELECT id, name FROM products").fetchall()) == before_contract
    assert pg_conn.execute("SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal").fetchone() == (0,)
    assert pg_conn.execute(
        "SELECT count(*) FROM pg_constraint WHERE conname = 'products_name_not_null'"
    ).fetchone() == (0,)
    assert pg_conn.execute(
        "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = 'idx_products_name'::regclass"
    ).fetchone() == (True,)
    assert pg_conn.execute(
        "SELECT count(*) FROM products WHERE price_cents IS DISTINCT FROM round(price * 100)::bigint"
    ).fetchone() == (0,)
    # the spec's checks hold, tenant isolation included
    zero = "00000000-0000-0000-0000-000000000000"
    assert as_app_user(pg_conn, zero, "SELECT count(*) FROM products") == 0
    assert (
        as_app_user(pg_conn, shop_a, "SELECT count(*) FROM products")
        == pg_conn.execute("SELECT count(*) FROM products WHERE shop_id = %s", (shop_a,)).fetchone()[0]
    )  # type: ignore[index]
    for check in spec.checks_after("contract"):
        if check.sql and check.expect is not None:
            assert pg_conn.execute(check.sql).fetchone() == (check.expect,), check.name


def test_rollback_restores_the_schema_and_keeps_every_write(pg_conn: psycopg.Connection) -> None:
    shop_a, _ = setup_demo(pg_conn)
    before = snapshot(pg_conn)

    run_phase(pg_conn, EXAMPLE / "expand.sql")
    pg_conn.execute("CREATE INDEX CONCURRENTLY idx_products_name ON products (name) WHERE deleted_at IS NULL")
    pg_conn.execute("UPDATE products SET name = 'written by the new code' WHERE id = 5")
    pg_conn.execute(
        "INSERT INTO products (shop_id, name, price) VALUES (%s, 'new code, name only', 4)", (shop_a,)
    )
    assert snapshot(pg_conn) != before

    run_phase(pg_conn, EXAMPLE / "rollback.sql")
    assert snapshot(pg_conn) == before
    titles = {r[0] for r in pg_conn.execute("SELECT title FROM products WHERE title LIKE '%%new code%%'")}
    assert titles == {"written by the new code", "new code, name only"}
    run_phase(pg_conn, EXAMPLE / "rollback.sql")  # IF EXISTS everywhere: a second run changes nothing
    assert snapshot(pg_conn) == before
