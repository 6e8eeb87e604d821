"""rename_table: the view carries the new name during the soak (both versions write), the contract renames."""

from __future__ import annotations

import threading

import psycopg

from tests.engine.operations.conftest import (
    Migration,
    build,
    check_rollback_restores,
    dump_schema,
    new_code,
    old_code,
    rows,
)

BEFORE = """
CREATE TABLE customers (id bigserial PRIMARY KEY, name text NOT NULL);
INSERT INTO customers (name) VALUES ('first');
"""
OPS = "- rename_table: {from: customers, to: clients}"
AFTER = """
CREATE TABLE clients (id bigserial PRIMARY KEY, name text NOT NULL);
ALTER INDEX clients_pkey RENAME TO customers_pkey;
ALTER SEQUENCE clients_id_seq RENAME TO customers_id_seq;
"""


def test_both_versions_write_then_contract_matches_reference(pg_dsn: str, reference_dsn: str) -> None:
    build(pg_dsn, BEFORE)
    migration = Migration.of(pg_dsn, OPS)
    migration.expand()
    failures: list[BaseException] = []

    def write(conn: psycopg.Connection, table: str) -> None:
        try:
            for i in range(40):
                conn.execute(f"INSERT INTO {table} (name) VALUES (%s)", (f"{table}{i}",))
        except BaseException as exc:
            failures.append(exc)

    with old_code(pg_dsn) as old, new_code(pg_dsn) as new:
        threads = [threading.Thread(target=write, args=a) for a in ((old, "customers"), (new, "clients"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not failures
        assert rows(old, "SELECT count(*) FROM customers WHERE name LIKE %s", "clients%") == [(40,)]
        assert rows(new, "SELECT count(*) FROM clients WHERE name LIKE %s", "customers%") == [(40,)]
    migration.contract()
    with new_code(pg_dsn) as new:
        new.execute("INSERT INTO clients (name) VALUES ('after')")
    build(reference_dsn, AFTER)
    assert dump_schema(pg_dsn) == dump_schema(reference_dsn)


def test_rollback_restores(pg_dsn: str, reference_dsn: str) -> None:
    check_rollback_restores(pg_dsn, reference_dsn, BEFORE, OPS)
