"""create_constraint on real PostgreSQL (pgroll's examples 44, 45, 47): rollback restores the schema, both
versions write during the soak, the contract ends at a hand-written reference, bad input is refused."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from airflow_provider_expand.engine.operations import errors
from airflow_provider_expand.engine.operations.plan import MigrationPlan
from tests.engine.operations.phases import dump, plan, rollback_then_contract, versions, write_together

SETUP = """
CREATE TABLE sellers (name text, zip int, PRIMARY KEY (name, zip));
CREATE TABLE tickets (ticket_id int PRIMARY KEY, sellers_name text, sellers_zip int, ticket_type text);
INSERT INTO sellers VALUES ('alice', 1), ('bob', 2);
INSERT INTO tickets SELECT i, CASE WHEN i % 2 = 0 THEN 'alice' ELSE 'bob' END, i % 3, 'x' FROM generate_series(1, 7) i;
"""
TABLES = """
CREATE TABLE sellers (name text, zip int, PRIMARY KEY (name, zip));
CREATE TABLE tickets (ticket_id int PRIMARY KEY, ticket_type text, sellers_name text, sellers_zip int{extra});
"""
OLD = "INSERT INTO tickets (ticket_id, sellers_name, sellers_zip) VALUES (%s, 'bob', 2)"
NEW = "INSERT INTO tickets (ticket_id, sellers_name, sellers_zip) VALUES (%s, 'alice', 1)"


@pytest.fixture
def db(pg_conn: psycopg.Connection, pg_dsn: str) -> str:
    pg_conn.execute(SETUP)
    return pg_dsn


def _same(columns: list[str]) -> dict[str, str]:
    return {c: c for c in columns}


def test_unique(db: str, pg_server_dsn: str) -> None:
    cols = ["sellers_name", "sellers_zip"]
    op = {
        "create_constraint": {
            "type": "unique",
            "table": "tickets",
            "name": "unique_zip_name",
            "columns": cols,
            "up": {"sellers_name": "sellers_name", "sellers_zip": "sellers_zip + ticket_id * 10"},
            "down": _same(cols),
        }
    }

    def soak(migration: MigrationPlan) -> None:
        new_sql = "INSERT INTO tickets (ticket_id, sellers_name, sellers_zip) SELECT x, 'alice', x FROM (SELECT %s::int AS x) s"
        write_together(db, migration, OLD, new_sql, range(1000, 1010))
        with versions(db, migration) as (old, new):
            assert new.execute("SELECT sellers_zip FROM tickets WHERE ticket_id = 1001").fetchone() == (
                10012,
            )
            assert old.execute("SELECT sellers_zip FROM tickets WHERE ticket_id = 101001").fetchone() == (
                101001,
            )
            new.execute("INSERT INTO tickets (ticket_id, sellers_name, sellers_zip) VALUES (7777, 'carl', 5)")
            with pytest.raises(psycopg.errors.UniqueViolation):  # two new-code rows alike
                new.execute(
                    "INSERT INTO tickets (ticket_id, sellers_name, sellers_zip) VALUES (7778, 'carl', 5)"
                )

    migration = rollback_then_contract(
        db,
        pg_server_dsn,
        "m_unique",
        [op],
        soak,
        TABLES.format(extra=", CONSTRAINT unique_zip_name UNIQUE (sellers_name, sellers_zip)"),
    )
    assert [i.name for i in migration.indexes] == ["unique_zip_name"]


def test_check(db: str, pg_server_dsn: str) -> None:
    cols = ["sellers_name", "sellers_zip"]
    up = "SELECT CASE WHEN sellers_name != 'alice' AND sellers_zip <= 0 THEN 123 ELSE sellers_zip END"
    op = {
        "create_constraint": {
            "type": "check",
            "table": "tickets",
            "name": "check_zip_name",
            "columns": cols,
            "check": "sellers_name = 'alice' OR sellers_zip > 0",
            "up": {"sellers_name": "sellers_name", "sellers_zip": up},
            "down": _same(cols),
        }
    }

    def soak(migration: MigrationPlan) -> None:
        write_together(db, migration, OLD.replace("2)", "0)"), NEW, range(1000, 1010))
        with versions(db, migration) as (old, new):
            assert new.execute("SELECT sellers_zip FROM tickets WHERE ticket_id = 1000").fetchone() == (123,)
            assert old.execute("SELECT sellers_zip FROM tickets WHERE ticket_id = 1000").fetchone() == (0,)
            assert new.execute(
                "SELECT count(*) FROM tickets WHERE sellers_zip <= 0 AND sellers_name <> 'alice'"
            ).fetchone() == (0,)
            with pytest.raises(psycopg.errors.CheckViolation):
                new.execute(
                    "INSERT INTO tickets (ticket_id, sellers_name, sellers_zip) VALUES (7777, 'bob', 0)"
                )

    rollback_then_contract(
        db,
        pg_server_dsn,
        "m_check",
        [op],
        soak,
        TABLES.format(extra=", CONSTRAINT check_zip_name CHECK (sellers_name = 'alice' OR sellers_zip > 0)"),
    )


def test_foreign_key(db: str, pg_server_dsn: str) -> None:
    cols = ["sellers_name", "sellers_zip"]
    up = (
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM sellers s WHERE s.name = sellers_name AND s.zip = sellers_zip) "
        "THEN sellers_zip END"
    )
    op = {
        "create_constraint": {
            "type": "foreign_key",
            "table": "tickets",
            "name": "fk_sellers",
            "columns": cols,
            "references": {"table": "sellers", "columns": ["name", "zip"], "on_delete": "CASCADE"},
            "up": {"sellers_name": "sellers_name", "sellers_zip": up},
            "down": _same(cols),
        }
    }

    def soak(migration: MigrationPlan) -> None:
        write_together(db, migration, OLD.replace("2)", "9)"), NEW, range(1000, 1010))
        with versions(db, migration) as (old, new):
            assert new.execute("SELECT sellers_zip FROM tickets WHERE ticket_id = 1000").fetchone() == (None,)
            assert old.execute("SELECT sellers_zip FROM tickets WHERE ticket_id = 101000").fetchone() == (1,)
            with pytest.raises(psycopg.errors.ForeignKeyViolation):
                new.execute(
                    "INSERT INTO tickets (ticket_id, sellers_name, sellers_zip) VALUES (7777, 'bob', 9)"
                )

    rollback_then_contract(
        db,
        pg_server_dsn,
        "m_fk",
        [op],
        soak,
        TABLES.format(
            extra=", CONSTRAINT fk_sellers FOREIGN KEY (sellers_name, sellers_zip) "
            "REFERENCES sellers(name, zip) ON DELETE CASCADE"
        ),
    )


def test_bad_input(db: str) -> None:
    before = dump(db)
    cases: list[tuple[dict[str, Any], type[errors.OperationError], str]] = [
        (
            {"type": "unique", "table": "nope", "name": "u", "columns": ["a"]},
            errors.TableNotFoundError,
            "table",
        ),
        (
            {"type": "unique", "table": "tickets", "name": "u", "columns": ["nope"]},
            errors.ColumnNotFoundError,
            "columns",
        ),
        (
            {
                "type": "unique",
                "table": "tickets",
                "name": "u",
                "columns": ["ticket_type"],
                "up": {"other": "1"},
            },
            errors.OperationError,
            "up.other",
        ),
        (
            {"type": "primary_key", "table": "tickets", "name": "u", "columns": ["ticket_type"]},
            errors.UnsupportedError,
            "type",
        ),
        (
            {"type": "unique", "table": "tickets", "name": "tickets_pkey", "columns": ["ticket_type"]},
            errors.IndexExistsError,
            "name",
        ),
        (
            {
                "type": "check",
                "table": "tickets",
                "name": "c",
                "columns": ["ticket_type"],
                "check": "ticket_type <> ''",
                "up": {"ticket_type": "(SELECT"},
            },
            errors.ExpressionError,
            "up.ticket_type",
        ),
    ]
    for fields, error, field in cases:
        with pytest.raises((error, ValueError)) as caught:
            plan(db, "m_bad", [{"create_constraint": {"up": {}, "down": {}, **fields}}])
        if isinstance(caught.value, errors.OperationError):
            assert caught.value.field == field and caught.value.index == 0, fields
            assert f"operations[0].create_constraint.{field}:" in str(caught.value)
        else:  # refused by the fields model at load time (pydantic), naming the field
            assert field.split(".")[0] in str(caught.value), caught.value
    assert dump(db) == before
