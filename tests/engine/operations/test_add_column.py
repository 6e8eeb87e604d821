"""add_column: added under its final name with NOT NULL as a NOT VALID check, UNIQUE built concurrently,
``up`` for the old code's writes (trigger) and the rows already there (backfill); the contract validates."""

from __future__ import annotations

import threading

import psycopg
import pytest

from airflow_provider_expand.engine.operations.errors import OperationError
from tests.engine.operations.conftest import (
    Migration,
    build,
    check_contract_matches,
    check_rollback_restores,
    new_code,
    old_code,
    rows,
)

BEFORE = """
CREATE TABLE users (id bigserial PRIMARY KEY, name text NOT NULL);
INSERT INTO users (name) SELECT 'user' || g FROM generate_series(1, 300) g;
"""
OPS = """
- add_column:
    table: users
    up: upper(name)
    column: {name: handle, type: varchar(64), nullable: false, unique: true, comment: shown in URLs,
             check: {name: handle_length, constraint: "length(handle) > 2"}}
- add_column:
    table: users
    column: {name: active, type: boolean, default: "true", nullable: false}
"""
AFTER = """
CREATE TABLE users (id bigserial PRIMARY KEY, name text NOT NULL);
ALTER TABLE users ADD COLUMN handle varchar(64) NOT NULL;
ALTER TABLE users ADD CONSTRAINT handle_length CHECK (length(handle) > 2);
ALTER TABLE users ADD CONSTRAINT users_handle_key UNIQUE (handle);
COMMENT ON COLUMN users.handle IS 'shown in URLs';
ALTER TABLE users ADD COLUMN active boolean NOT NULL DEFAULT true;
"""


def test_expand_contract_matches_reference(pg_dsn: str, reference_dsn: str) -> None:
    check_contract_matches(pg_dsn, reference_dsn, BEFORE, OPS, AFTER)
    with old_code(pg_dsn) as conn:
        assert rows(conn, "SELECT handle FROM users WHERE id = 7") == [("USER7",)]


def test_rollback_restores(pg_dsn: str, reference_dsn: str) -> None:
    check_rollback_restores(pg_dsn, reference_dsn, BEFORE, OPS)


def test_old_and_new_code_write_while_backfill_runs(pg_dsn: str) -> None:
    build(pg_dsn, BEFORE)
    migration = Migration.of(pg_dsn, OPS)
    migration.expand()
    failures: list[BaseException] = []

    def old_writer() -> None:
        try:
            with old_code(pg_dsn) as conn:
                for i in range(50):
                    conn.execute("INSERT INTO users (name) VALUES (%s)", (f"old{i}",))
        except BaseException as exc:
            failures.append(exc)

    def new_writer() -> None:
        try:
            with new_code(pg_dsn) as conn:
                for i in range(50):
                    conn.execute("INSERT INTO users (name, handle) VALUES (%s, %s)", (f"new{i}", f"own-{i}"))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=f) for f in (old_writer, new_writer, migration.backfill)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    with new_code(pg_dsn) as conn:
        assert rows(conn, "SELECT handle FROM users WHERE name = 'old4'") == [("OLD4",)]  # up, by the trigger
        assert rows(conn, "SELECT handle FROM users WHERE name = 'new4'") == [
            ("own-4",)
        ]  # kept, not overwritten
        assert rows(conn, "SELECT count(*) FROM users WHERE handle IS NULL") == [(0,)]
        with pytest.raises(psycopg.errors.CheckViolation):  # NOT NULL is enforced for new rows already
            conn.execute("INSERT INTO users (name, handle) VALUES ('x', NULL)")
    migration.indexes()
    migration.contract()
    with old_code(pg_dsn) as conn:
        assert rows(conn, "SELECT count(*) FROM users") == [(400,)]


def test_not_null_without_default_needs_up(pg_dsn: str) -> None:
    build(pg_dsn, BEFORE)
    migration = Migration.of(pg_dsn, "- add_column: {table: users, column: {name: x, type: int}}")
    with pytest.raises(OperationError, match=r"operations\[0\]\.add_column\.up: required"):
        migration.expand()
    with old_code(pg_dsn) as conn:  # nothing ran
        assert rows(conn, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'x'") == [(0,)]
