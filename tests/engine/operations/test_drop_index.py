"""drop_index: kept for the old code during the soak, dropped concurrently by the contract."""

from __future__ import annotations

import pytest

from airflow_provider_expand.engine.operations.errors import ConflictError, IndexNotFoundError
from tests.engine.operations.conftest import Migration, build, check_contract_matches, check_rollback_restores

BEFORE = """
CREATE TABLE fruits (id bigserial PRIMARY KEY, name text UNIQUE);
CREATE INDEX idx_fruits_name_lower ON fruits (lower(name));
"""
OPS = "- drop_index: {name: idx_fruits_name_lower}"
AFTER = "CREATE TABLE fruits (id bigserial PRIMARY KEY, name text UNIQUE);"


def test_expand_contract_matches_reference(pg_dsn: str, reference_dsn: str) -> None:
    check_contract_matches(pg_dsn, reference_dsn, BEFORE, OPS, AFTER)


def test_rollback_restores(pg_dsn: str, reference_dsn: str) -> None:
    check_rollback_restores(pg_dsn, reference_dsn, BEFORE, OPS)


def test_refuses_missing_index_and_constraint_index(pg_dsn: str) -> None:
    build(pg_dsn, BEFORE)
    with pytest.raises(IndexNotFoundError, match=r"operations\[0\]\.drop_index\.name: index 'nope'"):
        Migration.of(pg_dsn, "- drop_index: {name: nope}").plan()
    with pytest.raises(ConflictError, match="backs constraint 'fruits_name_key'"):
        Migration.of(pg_dsn, "- drop_index: {name: fruits_name_key}").plan()
