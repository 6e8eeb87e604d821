"""Verification checks against a real PostgreSQL and a real HTTP server on loopback."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import psycopg
import pytest

from airflow_provider_expand.engine.database import Connector
from airflow_provider_expand.engine.verify.checks import (
    Check,
    RlsProbe,
    compare_policies,
    invalid_indexes,
    run_check,
    snapshot,
)

SCHEMA = """
CREATE TABLE products (id bigint PRIMARY KEY, shop_id uuid, title text);
INSERT INTO products SELECT g, '11111111-1111-1111-1111-111111111111', 't' || g FROM generate_series(1, 50) g;
ALTER TABLE products ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant ON products USING (shop_id = current_setting('app.current_shop_id', true)::uuid);
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'expand_test_app') THEN
    CREATE ROLE expand_test_app NOLOGIN;
  END IF;
END $$;
GRANT SELECT ON products TO expand_test_app;
"""


@pytest.fixture
def shop(pg_conn: psycopg.Connection) -> psycopg.Connection:
    pg_conn.execute(SCHEMA)
    return pg_conn


def test_sql_expectations(shop: psycopg.Connection, pg_connect: Connector) -> None:
    ok = run_check(
        pg_connect,
        Check(name="no orphan", sql="SELECT count(*) FROM products WHERE shop_id IS NULL", expect=0),
    )
    assert ok.ok and "returned 0" in ok.detail
    bad = run_check(pg_connect, Check(name="all", sql="SELECT count(*) FROM products", expect=0))
    assert not bad.ok and "returned 50, expected 0" in bad.detail
    broken = run_check(pg_connect, Check(name="typo", sql="SELECT count(*) FROM nope", expect=0))
    assert not broken.ok and 'relation "nope" does not exist' in broken.detail


def test_checks_cannot_write(shop: psycopg.Connection, pg_connect: Connector) -> None:
    result = run_check(pg_connect, Check(name="sneaky", sql="DELETE FROM products RETURNING 1", expect=1))
    assert not result.ok and "read-only transaction" in result.detail
    assert shop.execute("SELECT count(*) FROM products").fetchone() == (50,)


def test_rls_runs_as_the_application_role(shop: psycopg.Connection, pg_connect: Connector) -> None:
    other_shop = RlsProbe(
        table="products",
        role="expand_test_app",
        setting="app.current_shop_id",
        value="00000000-0000-0000-0000-000000000000",
    )
    isolated = run_check(pg_connect, Check(name="tenant isolation", rls=other_shop, expect=0))
    assert isolated.ok, isolated.detail
    own = RlsProbe(
        "products", "expand_test_app", "app.current_shop_id", "11111111-1111-1111-1111-111111111111"
    )
    assert run_check(pg_connect, Check(name="own rows", rls=own, expect=50)).ok
    shop.execute("DROP POLICY tenant ON products")
    shop.execute("CREATE POLICY leaky ON products USING (true)")
    leaked = run_check(pg_connect, Check(name="tenant isolation", rls=other_shop, expect=0))
    assert not leaked.ok and "50 rows visible" in leaked.detail
    superuser = RlsProbe("products", "postgres", "app.current_shop_id", "x")
    refused = run_check(pg_connect, Check(name="as superuser", rls=superuser, expect=0))
    assert not refused.ok and "bypasses RLS" in refused.detail


def test_latency_p95(shop: psycopg.Connection, pg_connect: Connector) -> None:
    fast = run_check(pg_connect, Check(name="lookup", sql="SELECT * FROM products WHERE id = 7", max_ms=100))
    assert fast.ok and "p95" in fast.detail
    slow = run_check(pg_connect, Check(name="slow", sql="SELECT pg_sleep(0.03)", max_ms=5))
    assert not slow.ok and "limit 5 ms" in slow.detail


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health/ready" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_status(health_url: str, pg_connect: Connector) -> None:
    assert run_check(pg_connect, Check(name="ready", http=f"{health_url}/health/ready")).ok
    down = run_check(pg_connect, Check(name="ready", http=f"{health_url}/other"))
    assert not down.ok and "-> 503 (expected 200)" in down.detail
    unreachable = run_check(
        pg_connect, Check(name="ready", http="http://127.0.0.1:9/health", timeout_seconds=1)
    )
    assert not unreachable.ok and "failed" in unreachable.detail


def test_policies_follow_a_table_renamed_or_dropped_on_purpose(
    shop: psycopg.Connection, pg_connect: Connector
) -> None:
    """rename_table and drop_table: after the contract the table has its new name, or is gone on purpose
    (the check reported both as "no longer exists" before)."""
    shop.execute("CREATE TABLE legacy (id int)")
    before = snapshot(pg_connect, ["products", "legacy"])
    shop.execute("ALTER TABLE products RENAME TO items")
    shop.execute("DROP TABLE legacy")
    after = snapshot(pg_connect, ["products", "items", "legacy"])
    unfollowed = compare_policies(before, after)
    assert [r.ok for r in unfollowed] == [False, False], unfollowed
    followed = compare_policies(before, after, {"products": "items", "legacy": None})
    assert [(r.name, r.ok) for r in followed] == [
        ("RLS policies intact on legacy", True),
        ("RLS policies intact on products (now items)", True),
    ], followed
    shop.execute("ALTER POLICY tenant ON items USING (true)")  # a change under the new name still fails
    changed = compare_policies(before, snapshot(pg_connect, ["items"]), {"products": "items", "legacy": None})
    assert [r.ok for r in changed] == [True, False] and "changed: tenant" in changed[1].detail


def test_policies_and_invalid_indexes(shop: psycopg.Connection, pg_connect: Connector) -> None:
    before = snapshot(pg_connect, ["products", "public.missing"])
    assert list(before.policies) == ["products"]
    shop.execute("ALTER TABLE products ADD COLUMN name text")
    assert all(r.ok for r in compare_policies(before, snapshot(pg_connect, ["products"])))
    shop.execute("ALTER POLICY tenant ON products USING (true)")
    changed = compare_policies(before, snapshot(pg_connect, ["products"]))
    assert [r.ok for r in changed] == [False] and "changed: tenant" in changed[0].detail
    from airflow_provider_expand.engine.verify.checks import SchemaSnapshot

    assert SchemaSnapshot.from_json(before.to_json()) == before

    assert all(r.ok for r in invalid_indexes(pg_connect, ["products"]))
    shop.execute("INSERT INTO products VALUES (51, NULL, 't1')")
    with pytest.raises(psycopg.errors.UniqueViolation):
        shop.execute("CREATE UNIQUE INDEX CONCURRENTLY idx_title ON products (title)")
    bad = invalid_indexes(pg_connect, ["products"])
    assert not bad[0].ok and "idx_title" in bad[0].detail
