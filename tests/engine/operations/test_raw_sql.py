"""sql: ``up`` in the expand (alone in its migration, the views read from the catalog after it), ``down`` in
the rollback; with ``onComplete``, ``up`` runs in the contract."""

from __future__ import annotations

from tests.engine.operations.conftest import (
    Migration,
    build,
    check_contract_matches,
    check_rollback_restores,
    new_code,
    rows,
)

BEFORE = "CREATE TABLE people (id bigserial PRIMARY KEY, name text);"
OPS = """
- sql:
    up: CREATE TABLE users (id integer PRIMARY KEY, name text); CREATE INDEX CONCURRENTLY users_name ON users (name)
    down: DROP TABLE IF EXISTS users
"""
AFTER = (
    BEFORE
    + "CREATE TABLE users (id integer PRIMARY KEY, name text); CREATE INDEX users_name ON users (name);"
)


def test_expand_contract_matches_reference(pg_dsn: str, reference_dsn: str) -> None:
    check_contract_matches(pg_dsn, reference_dsn, BEFORE, OPS, AFTER)
    with new_code(pg_dsn) as new:  # the version schema was read after the sql ran: it has the new table
        new.execute("INSERT INTO users VALUES (1, 'a')")
        assert rows(new, "SELECT name FROM users") == [("a",)]


def test_rollback_restores(pg_dsn: str, reference_dsn: str) -> None:
    check_rollback_restores(pg_dsn, reference_dsn, BEFORE, OPS)


def test_on_complete_runs_in_the_contract(pg_dsn: str, reference_dsn: str) -> None:
    ops = """
- add_column: {table: people, column: {name: nick, type: text, nullable: true}}
- sql: {up: ALTER TABLE people ADD COLUMN birth_date timestamp, onComplete: true}
"""
    build(pg_dsn, BEFORE)
    migration = Migration.of(pg_dsn, ops)
    migration.expand()
    with new_code(pg_dsn) as new:
        assert rows(
            new, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'birth_date'"
        ) == [(0,)]
    migration.contract()
    build(reference_dsn, BEFORE + "ALTER TABLE people ADD COLUMN nick text, ADD COLUMN birth_date timestamp;")
    from tests.engine.operations.conftest import dump_schema

    assert dump_schema(pg_dsn) == dump_schema(reference_dsn)
    _ = check_contract_matches, check_rollback_restores


def test_on_complete_sees_the_final_names(pg_dsn: str, reference_dsn: str) -> None:
    """As in pgroll, onComplete SQL after a rename and a column copy names the table and column as the new
    code does: the contract runs it after the rename pass (it failed on the physical names before)."""
    ops = """
- rename_table: {from: people, to: persons}
- drop_constraint: {table: persons, name: name_length, down: "name || '--'"}
- sql: {up: "COMMENT ON COLUMN persons.name IS 'no length check'", onComplete: true}
"""
    before = "CREATE TABLE people (id bigserial PRIMARY KEY, name text CONSTRAINT name_length CHECK (length(name) > 1));"
    after = """
CREATE TABLE persons (id bigserial PRIMARY KEY, name text);
ALTER INDEX persons_pkey RENAME TO people_pkey;
ALTER SEQUENCE persons_id_seq RENAME TO people_id_seq;
COMMENT ON COLUMN persons.name IS 'no length check';
"""
    check_contract_matches(pg_dsn, reference_dsn, before, ops, after)
