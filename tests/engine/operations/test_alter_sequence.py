"""Several column-changing operations in one migration, through the DDL runner as the DAG runs them (lint,
snapshot, ledger checkpoints): each operation sees what the previous one changed."""

from __future__ import annotations

from tests.engine.operations.conftest import (
    Migration,
    build,
    check_rollback_restores,
    new_code,
    old_code,
    rows,
)

BEFORE = """
CREATE TABLE events (id bigserial PRIMARY KEY, name text, rating text, score int, CONSTRAINT name_length CHECK (length(name) > 1));
CREATE TABLE fruits (id int PRIMARY KEY, name text);
INSERT INTO events (name, rating, score) SELECT 'event ' || g, (g % 5)::text, g FROM generate_series(1, 250) g;
INSERT INTO events (name, rating) VALUES (NULL, '1');
"""
OPS = """
- alter_column:
    table: events
    column: name
    type: text
    default: "'unknown event'"
    nullable: false
    comment: the full name of the event
    unique: {name: events_event_name_unique}
    check: {name: event_name_length, constraint: length(name) > 3}
    up: SELECT CASE WHEN name IS NULL OR LENGTH(name) <= 3 THEN 'placeholder ' || id ELSE name END
    down: name
- alter_column: {table: events, column: rating, type: integer, up: CAST(rating AS integer), down: CAST(rating AS text)}
- rename_constraint: {table: events, from: name_length, to: name_length_check}
- create_constraint:
    type: check
    table: events
    name: rating_range
    columns: [score]
    check: score BETWEEN 0 AND 100
    up: {score: "LEAST(score, 100)"}
    down: {score: score}
- set_replica_identity: {table: fruits, identity: {type: full}}
"""
AFTER = """
CREATE TABLE events (id bigserial PRIMARY KEY, name text NOT NULL DEFAULT 'unknown event', rating integer,
                     score int,
                     CONSTRAINT name_length_check CHECK (length(name) > 1),
                     CONSTRAINT event_name_length CHECK (length(name) > 3),
                     CONSTRAINT events_event_name_unique UNIQUE (name),
                     CONSTRAINT rating_range CHECK (score BETWEEN 0 AND 100));
COMMENT ON COLUMN events.name IS 'the full name of the event';
CREATE TABLE fruits (id int PRIMARY KEY, name text);
ALTER TABLE fruits REPLICA IDENTITY FULL;
"""


def test_contract_matches_reference(pg_dsn: str, reference_dsn: str) -> None:
    build(pg_dsn, BEFORE)
    migration = Migration.of(pg_dsn, OPS)
    migration.expand()
    with old_code(pg_dsn) as old, new_code(pg_dsn) as new:
        old.execute("INSERT INTO events (id, name, rating) VALUES (1000, NULL, '2')")
        new.execute("INSERT INTO events (id, name, rating) VALUES (1001, 'new event', 3)")
        assert rows(new, "SELECT name, rating FROM events WHERE id = 1000") == [("placeholder 1000", 2)]
        assert rows(old, "SELECT name, rating FROM events WHERE id = 1001") == [("new event", "3")]
    migration.backfill()
    migration.indexes()
    migration.contract()
    with old_code(pg_dsn) as conn:
        assert rows(conn, "SELECT name FROM events WHERE id = 251") == [("placeholder 251",)]
        assert rows(conn, "SELECT count(*) FROM events WHERE score > 100") == [(0,)]
        assert rows(conn, "SELECT count(*) FROM events WHERE score = 100") == [(153,)]  # LEAST ignores NULL
    build(reference_dsn, AFTER.replace("bigserial", "bigserial"))
    from tests.engine.operations.conftest import dump_schema

    assert dump_schema(pg_dsn) == dump_schema(reference_dsn)


def test_rollback_restores(pg_dsn: str, reference_dsn: str) -> None:
    check_rollback_restores(pg_dsn, reference_dsn, BEFORE, OPS)


def test_second_change_of_one_column_is_a_conflict(pg_dsn: str) -> None:
    import pytest

    from airflow_provider_expand.engine.operations.errors import ConflictError

    build(pg_dsn, BEFORE)
    ops = OPS + "- alter_column: {table: events, column: rating, nullable: false, up: rating, down: rating}\n"
    with pytest.raises(ConflictError, match=r"operations\[5\]\.alter_column\.column: column 'rating'"):
        Migration.of(pg_dsn, ops).plan()
