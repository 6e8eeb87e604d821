"""Bad backfill input fails before any row changes, with an error that names the field at fault."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import uuid

import psycopg
import pytest
from psycopg import sql

from airflow_provider_expand.engine.backfill.run import BackfillInputError, BackfillSpec, run_backfill
from airflow_provider_expand.engine.database import Connector

LOG = logging.getLogger("test.backfill")
GOOD = BackfillSpec(
    table="products",
    set="name = title",
    where="name IS NULL AND title IS NOT NULL",
    batch_size=50,
    pause=dt.timedelta(0),
)


@pytest.fixture
def products(pg_conn: psycopg.Connection) -> psycopg.Connection:
    pg_conn.execute(
        """
        CREATE TABLE products (id bigint PRIMARY KEY, code text NOT NULL, title text, name text);
        INSERT INTO products (id, code, title) SELECT g, 'c' || g, 'title ' || g FROM generate_series(1, 300) g;
        CREATE TABLE no_pk (id bigint UNIQUE, title text, name text);
        CREATE TABLE pattern (code text NOT NULL, title text, name text);
        CREATE UNIQUE INDEX pattern_code ON pattern (code text_pattern_ops);
        CREATE TABLE pair (a int, b int, title text, name text, PRIMARY KEY (a, b));
        """
    )
    return pg_conn


def _fingerprint(conn: psycopg.Connection) -> str:
    row = conn.execute("SELECT md5(string_agg(p::text, ',' ORDER BY id)) FROM products p").fetchone()
    assert row is not None
    return str(row[0])


def _ledger_rows(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT to_regclass('airflow_expand.steps') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0
    count = conn.execute("SELECT count(*) FROM airflow_expand.steps").fetchone()
    return int(count[0]) if count else 0


CASES: list[tuple[str, dict[str, object], int, str, str]] = [
    ("missing table", {"table": "nope"}, 0, "table", r'"nope" does not exist'),
    ("missing schema", {"table": "nope.products"}, 0, "table", r"does not exist in schema 'nope'"),
    ("not a name", {"table": "products; DROP TABLE products"}, 0, "table", "must be a table name"),
    ("table expression", {"table": "products p"}, 0, "table", "must be a table name"),
    ("missing set column", {"set": "nam = title"}, 0, "set", r'column "nam" of relation "products" does not'),
    ("missing source column", {"set": "name = titel"}, 0, "set", r'column "titel" does not exist'),
    ("set does not parse", {"set": "name = = title"}, 0, "set", "does not parse"),
    ("second statement in set", {"set": "name = title; DROP TABLE products"}, 0, "set", "no ';'"),
    ("set with a condition", {"set": "name = title WHERE id = 1"}, 0, "set", "assignments only"),
    ("empty set", {"set": " "}, 0, "set", "must not be empty"),
    ("missing where column", {"where": "nam IS NULL"}, 0, "where", r'column "nam" does not exist'),
    ("where does not parse", {"where": "name IS NULL AND"}, 0, "where", "does not parse"),
    ("second statement in where", {"where": "true; DELETE FROM products"}, 0, "where", "no ';'"),
    ("where with RETURNING", {"where": "true RETURNING *"}, 0, "where", "condition only"),
    ("where not boolean", {"where": "title"}, 0, "where", "must be type boolean"),
    ("no where", {"where": None}, 0, "where", "is required"),
    ("batch_size zero", {"batch_size": 0}, 0, "batch_size", "must be >= 1, got 0"),
    ("batch_size negative", {"batch_size": -5}, 0, "batch_size", "must be >= 1, got -5"),
    ("partitions zero", {"partitions": 0}, 0, "partitions", "must be >= 1, got 0"),
    (
        "partition out of range",
        {"partitions": 2},
        2,
        "partition",
        r"must be in 0\.\.1 \(partitions=2\), got 2",
    ),
    ("negative partition", {}, -1, "partition", "must be >= 0, got -1"),
    ("missing key column", {"key": "nope"}, 0, "key", "column 'nope' does not exist"),
    ("key nullable", {"key": "title"}, 0, "key", "is nullable; the key must be NOT NULL"),
    ("key not unique", {"key": "code"}, 0, "key", r"need a valid unique btree index on exactly \(code\)"),
    ("key named twice", {"key": ("id", "id")}, 0, "key", "must name distinct columns"),
    ("key not the index's order", {"table": "pair", "key": ("b", "a")}, 0, "key", r"exactly \(b, a\)"),
    ("key sorted otherwise", {"table": "pattern", "key": "code"}, 0, "key", "another operator class"),
    (
        "no primary key, unique only on a nullable column",
        {"table": "no_pk"},
        0,
        "key",
        "has no primary key and no unique index on NOT NULL columns",
    ),
    ("set assigns the key", {"set": "id = id + 1, name = title"}, 0, "set", "assigns the key column 'id'"),
    ("zero target time", {"target_batch_time": dt.timedelta(0)}, 0, "target_batch_time", "must be > 0"),
]


def test_bad_input_names_the_field_and_changes_nothing(
    products: psycopg.Connection, pg_connect: Connector
) -> None:
    before = _fingerprint(products)
    for case, changes, partition, field, message in CASES:
        spec = dataclasses.replace(GOOD, **changes)  # type: ignore[arg-type]
        for dry_run in (False, True):
            with pytest.raises(BackfillInputError, match=message) as caught:
                run_backfill(
                    pg_connect, spec, migration_id="m", partition=partition, dry_run=dry_run, log=LOG
                )
            assert caught.value.field == field, case
            assert str(caught.value).startswith(f"backfill {field}:"), case
        assert _fingerprint(products) == before, case
        assert _ledger_rows(products) == 0, case


def test_a_set_that_leaves_where_true_stops_and_rolls_its_batch_back(
    products: psycopg.Connection, pg_connect: Connector
) -> None:
    products.execute("UPDATE products SET title = NULL WHERE id = 7")
    before = _fingerprint(products)
    spec = dataclasses.replace(GOOD, where="name IS NULL", set="name = upper(title)", batch_size=100)
    with pytest.raises(
        BackfillInputError, match=r"row with key 7 still matches where 'name IS NULL'"
    ) as caught:
        run_backfill(pg_connect, spec, migration_id="m", log=LOG)
    assert caught.value.field == "set"
    assert _fingerprint(products) == before  # the first batch held key 7, and it was rolled back
    step = products.execute("SELECT status, rows_done, last_key, error FROM airflow_expand.steps").fetchone()
    assert step is not None and step[:3] == ("failed", 0, None) and "still matches" in step[3]


def test_row_level_security_on_the_role_is_refused(products: psycopg.Connection, pg_dsn: str) -> None:
    """Under RLS the backfill would only see (and the sweep only vouch for) the rows a policy shows."""
    role = f"expand_app_{uuid.uuid4().hex[:8]}"
    products.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    try:
        products.execute(sql.SQL("GRANT SELECT, UPDATE ON products TO {}").format(sql.Identifier(role)))
        products.execute("ALTER TABLE products ENABLE ROW LEVEL SECURITY")
        products.execute("CREATE POLICY some_shop ON products USING (id < 100)")

        def as_app() -> psycopg.Connection:
            conn = psycopg.connect(pg_dsn, autocommit=True)
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
            return conn

        before = _fingerprint(products)
        with pytest.raises(
            BackfillInputError, match=rf"row level security .* applies to role '{role}'"
        ) as caught:
            run_backfill(as_app, GOOD, migration_id="m", log=LOG)
        assert caught.value.field == "table" and _fingerprint(products) == before
    finally:
        products.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        products.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
