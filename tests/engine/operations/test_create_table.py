"""create_table: created by the expand with its columns and constraints, dropped by the rollback."""

from __future__ import annotations

from tests.engine.operations.conftest import (
    Migration,
    build,
    check_contract_matches,
    check_rollback_restores,
    new_code,
    rows,
)

BEFORE = "CREATE TABLE customers (id integer PRIMARY KEY);"
OPS = """
- create_table:
    name: orders
    comment: one per checkout
    columns:
      - {name: id, type: serial, pk: true}
      - {name: customer_id, type: integer, references: {name: fk_customer, table: customers, column: id, on_delete: CASCADE}}
      - {name: quantity, type: integer, default: "1", check: {name: positive_quantity, constraint: quantity > 0}}
      - {name: code, type: varchar(32), unique: true, nullable: true, comment: from the shop}
    constraints:
      - {name: code_or_quantity, type: check, check: "code IS NOT NULL OR quantity > 1"}
      - {name: customer_code, type: unique, columns: [customer_id, code]}
"""
AFTER = """
CREATE TABLE customers (id integer PRIMARY KEY);
CREATE TABLE orders (
  id serial PRIMARY KEY,
  customer_id integer NOT NULL CONSTRAINT fk_customer REFERENCES customers (id) ON DELETE CASCADE,
  quantity integer NOT NULL DEFAULT 1 CONSTRAINT positive_quantity CHECK (quantity > 0),
  code varchar(32) UNIQUE,
  CONSTRAINT code_or_quantity CHECK (code IS NOT NULL OR quantity > 1),
  CONSTRAINT customer_code UNIQUE (customer_id, code)
);
COMMENT ON TABLE orders IS 'one per checkout';
COMMENT ON COLUMN orders.code IS 'from the shop';
"""


def test_expand_contract_matches_reference(pg_dsn: str, reference_dsn: str) -> None:
    check_contract_matches(pg_dsn, reference_dsn, BEFORE, OPS, AFTER)


def test_rollback_restores(pg_dsn: str, reference_dsn: str) -> None:
    check_rollback_restores(pg_dsn, reference_dsn, BEFORE, OPS)


def test_new_code_sees_the_table_through_its_view(pg_dsn: str) -> None:
    build(pg_dsn, BEFORE + "INSERT INTO customers VALUES (1);")
    Migration.of(pg_dsn, OPS).expand()
    with new_code(pg_dsn) as new:
        new.execute("INSERT INTO orders (customer_id, quantity, code) VALUES (1, 2, 'A')")
        assert rows(new, "SELECT id, quantity FROM orders") == [(1, 2)]
