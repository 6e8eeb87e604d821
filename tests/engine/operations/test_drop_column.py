"""drop_column: hidden from the new code at once, ``down`` fills it for the old code, dropped by the contract."""

from __future__ import annotations

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
CREATE TABLE fruits (id bigserial PRIMARY KEY, name text NOT NULL, price int NOT NULL);
INSERT INTO fruits (name, price) VALUES ('apple', 3);
"""
OPS = "- drop_column: {table: fruits, column: price, down: name_length(name)}"
FUNCTION = "CREATE FUNCTION name_length(text) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT length($1)';"
AFTER = "CREATE TABLE fruits (id bigserial PRIMARY KEY, name text NOT NULL);"


def test_expand_contract_matches_reference(pg_dsn: str, reference_dsn: str) -> None:
    check_contract_matches(
        pg_dsn,
        reference_dsn,
        BEFORE + FUNCTION,
        "- drop_column: {table: fruits, column: price, down: public.name_length(name)}",
        AFTER + FUNCTION,
    )


def test_rollback_restores(pg_dsn: str, reference_dsn: str) -> None:
    check_rollback_restores(
        pg_dsn, reference_dsn, BEFORE, "- drop_column: {table: fruits, column: price, down: '0'}"
    )


def test_new_code_inserts_without_the_column_and_old_code_sees_down(pg_dsn: str) -> None:
    build(pg_dsn, BEFORE)
    migration = Migration.of(pg_dsn, "- drop_column: {table: fruits, column: price, down: length(name) * 10}")
    migration.expand()
    with new_code(pg_dsn) as new, old_code(pg_dsn) as old:
        new.execute("INSERT INTO fruits (name) VALUES ('kiwi')")
        old.execute("INSERT INTO fruits (name, price) VALUES ('fig', 7)")
        assert rows(old, "SELECT price FROM fruits WHERE name = 'kiwi'") == [(40,)]
        assert rows(old, "SELECT price FROM fruits WHERE name = 'fig'") == [(7,)]  # old code's own value kept
        assert [
            c
            for (c,) in rows(
                new,
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = 'm1' AND table_name = 'fruits' ORDER BY 1",
            )
        ] == ["id", "name"]
    migration.contract()
    with new_code(pg_dsn) as new:
        assert rows(new, "SELECT name FROM fruits ORDER BY id") == [("apple",), ("kiwi",), ("fig",)]


def test_not_null_column_without_down_is_refused(pg_dsn: str) -> None:
    build(pg_dsn, BEFORE)
    migration = Migration.of(pg_dsn, "- drop_column: {table: fruits, column: price}")
    with pytest.raises(OperationError, match=r"migration.yaml: operations\[0\]\.drop_column\.down: required"):
        migration.expand()


def test_missing_column(pg_dsn: str) -> None:
    build(pg_dsn, BEFORE)
    migration = Migration.of(pg_dsn, "- drop_column: {table: fruits, column: cost, down: '0'}")
    with pytest.raises(
        OperationError, match=r"operations\[0\]\.drop_column\.column: column 'cost' does not exist"
    ):
        migration.expand()
