"""drop_constraint and drop_multicolumn_constraint on real PostgreSQL (pgroll's examples 23, 24, 27, 48):
new code may write what the constraint refused, ``down`` keeps old code's columns valid; rollback and
contract against ``pg_dump -s``."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from airflow_provider_expand.engine.operations import errors
from airflow_provider_expand.engine.operations.plan import MigrationPlan
from tests.engine.operations.phases import (
    apply,
    dump,
    plan,
    rollback_then_contract,
    run_to_soak,
    versions,
    write_together,
)

SETUP = """
CREATE TABLE users (id int PRIMARY KEY);
CREATE TABLE posts (
    id int PRIMARY KEY,
    title text CONSTRAINT title_length CHECK (length(title) > 3),
    user_id int CONSTRAINT fk_users_id REFERENCES users (id),
    slug text CONSTRAINT posts_slug_unique UNIQUE,
    a int, b int, CONSTRAINT a_below_b CHECK (a < b)
);
INSERT INTO users VALUES (1), (2);
INSERT INTO posts SELECT i, 'title ' || i, 1 + i % 2, 'slug' || i, i, i + 1 FROM generate_series(1, 7) i;
"""
POSTS = """
CREATE TABLE users (id int PRIMARY KEY);
CREATE TABLE posts (id int PRIMARY KEY, {columns}{constraints});
"""


@pytest.fixture
def db(pg_conn: psycopg.Connection, pg_dsn: str) -> str:
    pg_conn.execute(SETUP)
    return pg_dsn


def test_drop_check_constraint(db: str, pg_server_dsn: str) -> None:
    down = "SELECT CASE WHEN length(title) <= 3 THEN LPAD(title, 4, '-') ELSE title END"
    op = {"drop_constraint": {"table": "posts", "name": "title_length", "up": "title", "down": down}}

    def soak(migration: MigrationPlan) -> None:
        old_sql = "INSERT INTO posts (id, title) VALUES (%s, 'long title')"
        write_together(
            db, migration, old_sql, "INSERT INTO posts (id, title) VALUES (%s, 'ab')", range(100, 110)
        )
        with versions(db, migration) as (old, new):
            assert old.execute("SELECT title FROM posts WHERE id = 100100").fetchone() == ("--ab",)
            assert new.execute("SELECT title FROM posts WHERE id = 100100").fetchone() == ("ab",)
            assert new.execute("SELECT title FROM posts WHERE id = 100").fetchone() == ("long title",)
            with pytest.raises(psycopg.errors.CheckViolation):  # old code still has the constraint
                old.execute("INSERT INTO posts (id, title) VALUES (999, 'ab')")

    rollback_then_contract(
        db,
        pg_server_dsn,
        "m_drop_check",
        [op],
        soak,
        POSTS.format(
            columns="user_id int, slug text, a int, b int, title text",
            constraints=", CONSTRAINT fk_users_id FOREIGN KEY (user_id) REFERENCES users(id), "
            "CONSTRAINT posts_slug_unique UNIQUE (slug), CONSTRAINT a_below_b CHECK (a < b)",
        ),
    )


def test_drop_foreign_key_and_unique(db: str, pg_server_dsn: str) -> None:
    fk_down = (
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM users WHERE users.id = user_id) THEN user_id ELSE NULL END"
    )
    ops = [
        {"drop_constraint": {"table": "posts", "name": "fk_users_id", "up": "user_id", "down": fk_down}},
        {
            "drop_constraint": {
                "table": "posts",
                "name": "posts_slug_unique",
                "up": "slug",
                "down": "slug || '-' || (random()*1000000)::integer",
            }
        },
    ]

    def soak(migration: MigrationPlan) -> None:
        old_sql = "INSERT INTO posts (id, user_id, slug) SELECT x, 1, 'old' || x FROM (SELECT %s::int AS x) s"
        new_sql = "INSERT INTO posts (id, user_id, slug) VALUES (%s, 42, 'same')"
        write_together(db, migration, old_sql, new_sql, range(100, 105))
        with versions(db, migration) as (old, new):
            assert old.execute(
                "SELECT count(*) FROM posts WHERE id > 100000 AND user_id IS NULL"
            ).fetchone() == (5,)
            assert new.execute("SELECT count(*) FROM posts WHERE slug = 'same'").fetchone() == (5,)
            assert old.execute("SELECT count(DISTINCT slug) FROM posts WHERE id > 100000").fetchone() == (5,)

    rollback_then_contract(
        db,
        pg_server_dsn,
        "m_drop_fk",
        ops,
        soak,
        POSTS.format(
            columns="title text, a int, b int, user_id int, slug text",
            constraints=", CONSTRAINT title_length CHECK (length(title) > 3), CONSTRAINT a_below_b CHECK (a < b)",
        ),
    )


def test_drop_multicolumn_constraint(db: str, pg_server_dsn: str) -> None:
    op = {
        "drop_multicolumn_constraint": {
            "table": "posts",
            "name": "a_below_b",
            "up": {"a": "a", "b": "b"},
            "down": {"a": "LEAST(a, b - 1)", "b": "b"},
        }
    }

    def soak(migration: MigrationPlan) -> None:
        write_together(
            db,
            migration,
            "INSERT INTO posts (id, a, b) VALUES (%s, 1, 2)",
            "INSERT INTO posts (id, a, b) VALUES (%s, 5, 3)",
            range(100, 105),
        )
        with versions(db, migration) as (old, new):
            assert old.execute("SELECT a, b FROM posts WHERE id = 100100").fetchone() == (2, 3)
            assert new.execute("SELECT a, b FROM posts WHERE id = 100100").fetchone() == (5, 3)
            assert new.execute("SELECT a, b FROM posts WHERE id = 100").fetchone() == (1, 2)

    rollback_then_contract(
        db,
        pg_server_dsn,
        "m_drop_multi",
        [op],
        soak,
        POSTS.format(
            columns="title text, user_id int, slug text, a int, b int",
            constraints=", CONSTRAINT title_length CHECK (length(title) > 3), "
            "CONSTRAINT fk_users_id FOREIGN KEY (user_id) REFERENCES users(id), "
            "CONSTRAINT posts_slug_unique UNIQUE (slug)",
        ),
    )


def test_new_code_writes_between_every_contract_group(pg_conn: psycopg.Connection, pg_dsn: str) -> None:
    """The down trigger fills a NOT NULL old column until the column goes: new code's inserts failed
    between the contract's first group (which dropped the triggers) and the drop of the old column."""
    pg_conn.execute(
        "CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL CONSTRAINT body_length CHECK (length(body) > 3));"
        "INSERT INTO notes VALUES (1, 'long body')"
    )
    down = "SELECT CASE WHEN length(body) <= 3 THEN LPAD(body, 4, '-') ELSE body END"
    op = {"drop_constraint": {"table": "notes", "name": "body_length", "up": "body", "down": down}}
    migration = plan(pg_dsn, "m_contract_writes", [op])
    run_to_soak(pg_dsn, migration)
    assert len(migration.contract) > 1
    with versions(pg_dsn, migration) as (_, new):
        for n, group in enumerate(migration.contract):
            apply(pg_dsn, [group])
            new.execute("INSERT INTO notes (id, body) VALUES (%s, 'ab')", (100 + n,))
        assert new.execute("SELECT count(*) FROM notes WHERE body = 'ab'").fetchone() == (
            len(migration.contract),
        )


def test_bad_input(db: str) -> None:
    before = dump(db)
    cases: list[tuple[dict[str, Any], type[errors.OperationError], str]] = [
        (
            {"drop_constraint": {"table": "posts", "name": "nope", "down": "title"}},
            errors.ConstraintNotFoundError,
            "name",
        ),
        (
            {"drop_constraint": {"table": "posts", "name": "a_below_b", "down": "a"}},
            errors.OperationError,
            "name",
        ),
        (
            {"drop_constraint": {"table": "posts", "name": "posts_pkey", "down": "id"}},
            errors.UnsupportedError,
            "name",
        ),
        (
            {"drop_multicolumn_constraint": {"table": "posts", "name": "a_below_b", "down": {"a": "a"}}},
            errors.OperationError,
            "down",
        ),
        (
            {
                "drop_multicolumn_constraint": {
                    "table": "posts",
                    "name": "a_below_b",
                    "down": {"a": "a", "b": "b", "c": "1"},
                }
            },
            errors.OperationError,
            "down.c",
        ),
    ]
    for op, error, field in cases:
        with pytest.raises(error) as caught:
            plan(db, "m_bad", [op])
        assert caught.value.field == field and caught.value.index == 0, op
        assert f"operations[0].{next(iter(op))}.{field}:" in str(caught.value)
    assert dump(db) == before
