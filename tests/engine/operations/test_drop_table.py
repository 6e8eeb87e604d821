"""drop_table: gone from the version schema at once, the old code keeps writing it until the contract."""

from __future__ import annotations

import psycopg
import pytest

from tests.engine.operations.conftest import (
    Migration,
    build,
    check_contract_matches,
    check_rollback_restores,
    new_code,
    old_code,
)

BEFORE = """
CREATE TABLE products (id bigserial PRIMARY KEY, name text);
CREATE TABLE legacy (id bigserial PRIMARY KEY, note text);
"""
OPS = "- drop_table: {name: legacy}"
AFTER = "CREATE TABLE products (id bigserial PRIMARY KEY, name text);"


def test_expand_contract_matches_reference(pg_dsn: str, reference_dsn: str) -> None:
    check_contract_matches(pg_dsn, reference_dsn, BEFORE, OPS, AFTER)


def test_rollback_restores(pg_dsn: str, reference_dsn: str) -> None:
    check_rollback_restores(pg_dsn, reference_dsn, BEFORE, OPS)


def test_hidden_from_new_code_kept_for_old_code(pg_dsn: str) -> None:
    build(pg_dsn, BEFORE)
    Migration.of(pg_dsn, OPS).expand()
    with old_code(pg_dsn) as old, new_code(pg_dsn) as new:
        old.execute("INSERT INTO legacy (note) VALUES ('still used')")
        new.execute("INSERT INTO products (name) VALUES ('p')")
        with pytest.raises(psycopg.errors.UndefinedTable):
            new.execute("SELECT * FROM legacy")
