"""rename_constraint on real PostgreSQL (pgroll's example 33): the name changes only in the contract."""

from __future__ import annotations

import psycopg
import pytest

from airflow_provider_expand.engine.operations import errors
from airflow_provider_expand.engine.operations.plan import MigrationPlan
from tests.engine.operations.phases import dump, plan, rollback_then_contract, versions, write_together

SETUP = """
CREATE TABLE people (id int PRIMARY KEY, name text CONSTRAINT name_length CHECK (length(name) > 1),
                     email text CONSTRAINT people_email_key UNIQUE);
"""


def test_rename_check_and_unique(pg_conn: psycopg.Connection, pg_dsn: str, pg_server_dsn: str) -> None:
    pg_conn.execute(SETUP)
    ops = [
        {"rename_constraint": {"table": "people", "from": "name_length", "to": "name_length_check"}},
        {"rename_constraint": {"table": "people", "from": "people_email_key", "to": "people_email_unique"}},
    ]

    def soak(migration: MigrationPlan) -> None:
        assert migration.expand[-1].label == "version schema"  # nothing else changes before the contract
        write_together(
            pg_dsn,
            migration,
            "INSERT INTO people (id, name) VALUES (%s, 'old')",
            "INSERT INTO people (id, name) VALUES (%s, 'new')",
            range(1, 6),
        )
        with versions(pg_dsn, migration) as (old, new):
            assert old.execute("SELECT count(*) FROM people WHERE name = 'new'").fetchone() == (5,)
            assert new.execute("SELECT count(*) FROM people WHERE name = 'old'").fetchone() == (5,)
            with pytest.raises(psycopg.errors.CheckViolation, match="name_length"):
                new.execute("INSERT INTO people (id, name) VALUES (99, 'x')")

    rollback_then_contract(
        pg_dsn,
        pg_server_dsn,
        "m_rename_constraint",
        ops,
        soak,
        """CREATE TABLE people (id int PRIMARY KEY, name text CONSTRAINT name_length_check CHECK (length(name) > 1),
                                email text CONSTRAINT people_email_unique UNIQUE);""",
    )


def test_bad_input(pg_conn: psycopg.Connection, pg_dsn: str) -> None:
    pg_conn.execute(SETUP)
    before = dump(pg_dsn)
    cases = [
        ({"table": "people", "from": "nope", "to": "x"}, errors.ConstraintNotFoundError, "from"),
        ({"table": "people", "from": "name_length", "to": "people_email_key"}, errors.IndexExistsError, "to"),
        ({"table": "people", "from": "people_email_key", "to": "people_pkey"}, errors.IndexExistsError, "to"),
        ({"table": "nobody", "from": "a", "to": "b"}, errors.TableNotFoundError, "table"),
    ]
    for fields, error, field in cases:
        with pytest.raises(error) as caught:
            plan(pg_dsn, "m_bad", [{"rename_constraint": fields}])
        assert caught.value.field == field, fields
        assert f"operations[0].rename_constraint.{field}:" in str(caught.value)
    assert dump(pg_dsn) == before
