"""rename_column: the view renames during the soak (both code versions write at once), the contract renames
the real column; the result is the hand-written schema, and a rollback leaves the schema as it was."""

from __future__ import annotations

import threading

import psycopg
import pytest

from tests.engine.operations.conftest import Migration, build, dump_schema, new_code, old_code, rows

BEFORE = """
CREATE TABLE employees (id bigserial PRIMARY KEY, name text NOT NULL, role text);
CREATE INDEX employees_role ON employees (role);
INSERT INTO employees (name, role) SELECT 'e' || g, 'r' || g FROM generate_series(1, 50) g;
"""
AFTER = """
CREATE TABLE employees (id bigserial PRIMARY KEY, name text NOT NULL, job_title text);
CREATE INDEX employees_role ON employees (job_title);
"""
OPS = """
- rename_column: {table: employees, from: role, to: job_title}
"""


@pytest.fixture
def migration(pg_dsn: str) -> Migration:
    build(pg_dsn, BEFORE)
    return Migration.of(pg_dsn, OPS)


def test_both_versions_write_during_the_soak_and_contract_renames(
    migration: Migration, pg_dsn: str, reference_dsn: str
) -> None:
    migration.expand()
    errors: list[BaseException] = []

    def write(conn: psycopg.Connection, column: str, prefix: str) -> None:
        try:
            for i in range(40):
                conn.execute(
                    f"INSERT INTO employees (name, {column}) VALUES (%s, %s)",
                    (f"{prefix}{i}", f"{prefix}t{i}"),
                )
                conn.execute(
                    f"UPDATE employees SET {column} = %s WHERE name = %s", (f"{prefix}u{i}", f"{prefix}{i}")
                )
        except BaseException as exc:
            errors.append(exc)

    with old_code(pg_dsn) as old, new_code(pg_dsn) as new:
        threads = [
            threading.Thread(target=write, args=(old, "role", "old")),
            threading.Thread(target=write, args=(new, "job_title", "new")),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        # each sees the other's writes, under its own name
        assert rows(old, "SELECT role FROM employees WHERE name = 'new3'") == [("newu3",)]
        assert rows(new, "SELECT job_title FROM employees WHERE name = 'old3'") == [("oldu3",)]
        assert rows(new, "SELECT count(*) FROM employees") == [(130,)]
        with pytest.raises(psycopg.errors.UndefinedColumn):
            new.execute("SELECT role FROM employees")
    migration.backfill()
    migration.indexes()
    migration.contract()
    with new_code(pg_dsn) as new:  # the new code keeps working after the contract
        new.execute("INSERT INTO employees (name, job_title) VALUES ('after', 'x')")
        assert rows(new, "SELECT job_title FROM employees WHERE name = 'after'") == [("x",)]
    build(reference_dsn, AFTER)
    assert dump_schema(pg_dsn) == dump_schema(reference_dsn)


def test_rollback_after_expand_restores_the_schema(
    migration: Migration, pg_dsn: str, reference_dsn: str
) -> None:
    build(reference_dsn, BEFORE)
    migration.expand()
    with new_code(pg_dsn) as new:
        new.execute("INSERT INTO employees (name, job_title) VALUES ('during', 'x')")
    migration.rollback()
    assert dump_schema(pg_dsn) == dump_schema(reference_dsn)
    with old_code(pg_dsn) as old:
        assert rows(old, "SELECT role FROM employees WHERE name = 'during'") == [("x",)]
        assert rows(old, "SELECT count(*) FROM pg_namespace WHERE nspname = 'm1'") == [(0,)]
