"""create_index: plain indexes by the index builder after the backfill, the others (opclass, sort, storage
parameters) by the DDL runner as one CREATE INDEX CONCURRENTLY; the rollback drops them concurrently."""

from __future__ import annotations

from tests.engine.operations.conftest import Migration, build, check_contract_matches, check_rollback_restores

BEFORE = """
CREATE TABLE fruits (id bigserial PRIMARY KEY, name text NOT NULL, size int);
INSERT INTO fruits (name, size) SELECT 'f' || g, g FROM generate_series(1, 200) g;
"""
OPS = """
- create_index: {name: idx_fruits_name, table: fruits, columns: [name], unique: true}
- create_index: {name: idx_fruits_big, table: fruits, columns: [{column: size}], predicate: size > 100}
- create_index:
    name: idx_fruits_custom
    table: fruits
    method: btree
    storage_parameters: fillfactor=70
    columns: {size: {sort: DESC, nulls: LAST}, name: {opclass: {name: text_pattern_ops}}}
"""
AFTER = """
CREATE TABLE fruits (id bigserial PRIMARY KEY, name text NOT NULL, size int);
CREATE UNIQUE INDEX idx_fruits_name ON fruits (name);
CREATE INDEX idx_fruits_big ON fruits (size) WHERE size > 100;
CREATE INDEX idx_fruits_custom ON fruits (size DESC NULLS LAST, name text_pattern_ops) WITH (fillfactor = 70);
"""


def test_expand_contract_matches_reference(pg_dsn: str, reference_dsn: str) -> None:
    check_contract_matches(pg_dsn, reference_dsn, BEFORE, OPS, AFTER)


def test_rollback_restores(pg_dsn: str, reference_dsn: str) -> None:
    check_rollback_restores(pg_dsn, reference_dsn, BEFORE, OPS)


def test_plain_indexes_go_to_the_index_builder(pg_dsn: str) -> None:
    build(pg_dsn, BEFORE)
    plan = Migration.of(pg_dsn, OPS).plan()
    assert [i.name for i in plan.indexes] == ["idx_fruits_name", "idx_fruits_big"]
    concurrent = [g for g in plan.expand if g.autocommit]
    assert len(concurrent) == 1 and "idx_fruits_custom" in concurrent[0].statements[0]
