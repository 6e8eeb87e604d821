"""alter_column on real PostgreSQL: both code versions during the soak, the contract against a hand-written
reference schema (``pg_dump -s``), the rollback back to the schema before, and bad input."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from airflow_provider_expand.engine.operations import errors
from tests.engine.operations.phases import (
    apply,
    backfill,
    dump,
    indexes,
    plan,
    reference,
    run_to_soak,
    together,
    versions,
)

SETUP = """
CREATE TABLE users (id int PRIMARY KEY, name text);
CREATE TABLE reviews (
    id int PRIMARY KEY,
    product text NOT NULL,
    review text,
    rating text DEFAULT '3',
    user_id int,
    CONSTRAINT review_not_spam CHECK (review <> 'spam')
);
CREATE INDEX reviews_rating_idx ON reviews (rating);
INSERT INTO users VALUES (1, 'ann'), (2, 'bob');
INSERT INTO reviews (id, product, review, rating, user_id)
SELECT i, 'p' || i, CASE WHEN i % 2 = 0 THEN NULL ELSE 'review ' || i END, (i % 5)::text, CASE WHEN i % 3 = 0 THEN 99 ELSE 1 END
FROM generate_series(1, 9) i;
"""


@pytest.fixture
def db(pg_conn: psycopg.Connection, pg_dsn: str) -> str:
    pg_conn.execute(SETUP)
    return pg_dsn


def _writers(dsn: str, migration: Any, old_sql: str, new_sql: str, start: int) -> None:
    """Old and new code insert at the same time (20 rows each)."""
    with versions(dsn, migration) as (old, new):
        together(
            lambda: [old.execute(old_sql, (start + i,)) for i in range(20)],
            lambda: [new.execute(new_sql, (start + 100 + i,)) for i in range(20)],
        )


def test_change_type_both_versions_then_contract(db: str, pg_server_dsn: str) -> None:
    ops = [
        {
            "alter_column": {
                "table": "reviews",
                "column": "rating",
                "type": "integer",
                "up": "CAST(rating AS integer)",
                "down": "CAST(rating AS text)",
            }
        }
    ]
    migration = plan(db, "m_retype", ops)
    before = dump(db)
    run_to_soak(db, migration)
    _writers(
        db,
        migration,
        "INSERT INTO reviews (id, product, rating) VALUES (%s, 'old', '4')",
        "INSERT INTO reviews (id, product, rating) VALUES (%s, 'new', 2)",
        1000,
    )
    with versions(db, migration) as (old, new):
        assert new.execute("SELECT rating FROM reviews WHERE id = 1000").fetchone() == (4,)
        assert old.execute("SELECT rating FROM reviews WHERE id = 1100").fetchone() == ("2",)
        assert new.execute("SELECT rating FROM reviews WHERE id = 7").fetchone() == (2,)  # backfilled
        assert new.execute("SELECT count(*) FROM reviews WHERE rating IS NULL").fetchone() == (0,)
        new.execute("UPDATE reviews SET rating = 5 WHERE id = 1")
        assert old.execute("SELECT rating FROM reviews WHERE id = 1").fetchone() == ("5",)
    apply(db, migration.contract)
    assert dump(db, "public") == reference(
        pg_server_dsn,
        """
        CREATE TABLE users (id int PRIMARY KEY, name text);
        CREATE TABLE reviews (id int PRIMARY KEY, product text NOT NULL, review text, user_id int,
                              rating integer DEFAULT CAST('3'::text AS integer),
                              CONSTRAINT review_not_spam CHECK (review <> 'spam'));
        CREATE INDEX reviews_rating_idx ON reviews (rating);
        """,
    ) or pytest.fail(f"schema after contract differs:\n{dump(db, 'public')}")
    assert before != dump(db)


def test_rollback_after_expand_restores_the_schema(db: str) -> None:
    ops = [
        {
            "alter_column": {
                "table": "reviews",
                "column": "review",
                "nullable": False,
                "up": "SELECT CASE WHEN review IS NULL THEN product || ' is good' ELSE review END",
                "down": "review",
                "check": {"name": "review_len", "constraint": "length(review) > 2"},
                "unique": {"name": "reviews_review_unique"},
                "comment": "the text",
            }
        }
    ]
    migration = plan(db, "m_rollback", ops)
    before = dump(db)
    run_to_soak(db, migration)
    assert dump(db) != before
    apply(db, migration.rollback)
    assert dump(db) == before


def test_not_null_check_unique_then_contract(db: str, pg_server_dsn: str) -> None:
    ops = [
        {
            "alter_column": {
                "table": "reviews",
                "column": "review",
                "nullable": False,
                "up": "SELECT CASE WHEN review IS NULL THEN product || ' is good' ELSE review END",
                "down": "review",
                "check": {"name": "review_len", "constraint": "length(review) > 2"},
                "unique": {"name": "reviews_review_unique"},
            }
        }
    ]
    migration = plan(db, "m_notnull", ops)
    assert [i.name for i in migration.indexes] == ["reviews_review_unique"]
    run_to_soak(db, migration)
    _writers(
        db,
        migration,
        "INSERT INTO reviews (id, product) SELECT x, 'old ' || x FROM (SELECT %s::int AS x) s",
        "INSERT INTO reviews (id, product, review) SELECT x, 'new', 'new ' || x FROM (SELECT %s::int AS x) s",
        5000,
    )
    with versions(db, migration) as (old, new):  # each version sees the other's concurrent writes
        assert new.execute("SELECT review FROM reviews WHERE id = 5003").fetchone() == ("old 5003 is good",)
        assert old.execute("SELECT review FROM reviews WHERE id = 5103").fetchone() == ("new 5103",)
    with versions(db, migration) as (old, new):
        old.execute("INSERT INTO reviews (id, product) VALUES (2000, 'tea')")  # old code: NULL review
        assert new.execute("SELECT review FROM reviews WHERE id = 2000").fetchone() == ("tea is good",)
        new.execute("INSERT INTO reviews (id, product, review) VALUES (2001, 'cake', 'great')")
        assert old.execute("SELECT review FROM reviews WHERE id = 2001").fetchone() == ("great",)
        with pytest.raises(psycopg.errors.CheckViolation):  # NOT NULL holds for new code during the soak
            new.execute("INSERT INTO reviews (id, product, review) VALUES (2002, 'x', NULL)")
        with pytest.raises(psycopg.errors.CheckViolation):
            new.execute("INSERT INTO reviews (id, product, review) VALUES (2003, 'x', 'no')")
        with pytest.raises(psycopg.errors.UniqueViolation):
            new.execute("INSERT INTO reviews (id, product, review) VALUES (2004, 'x', 'great')")
        with pytest.raises(psycopg.errors.CheckViolation):  # the old column's CHECK, carried over
            new.execute("INSERT INTO reviews (id, product, review) VALUES (2005, 'x', 'spam')")
        assert old.execute("SELECT count(*) FROM reviews WHERE review IS NULL").fetchone() == (25,)
    apply(db, migration.contract)
    expected = reference(
        pg_server_dsn,
        """
        CREATE TABLE users (id int PRIMARY KEY, name text);
        CREATE TABLE reviews (id int PRIMARY KEY, product text NOT NULL, rating text DEFAULT '3', user_id int,
                              review text NOT NULL,
                              CONSTRAINT review_not_spam CHECK (review <> 'spam'),
                              CONSTRAINT review_len CHECK (length(review) > 2),
                              CONSTRAINT reviews_review_unique UNIQUE (review));
        CREATE INDEX reviews_rating_idx ON reviews (rating);
        """,
    )
    assert dump(db, "public") == expected


def test_foreign_key_then_contract(db: str, pg_server_dsn: str) -> None:
    ops = [
        {
            "alter_column": {
                "table": "reviews",
                "column": "user_id",
                "references": {
                    "name": "fk_users_id",
                    "table": "users",
                    "column": "id",
                    "on_delete": "CASCADE",
                },
                "up": "SELECT CASE WHEN EXISTS (SELECT 1 FROM users WHERE users.id = user_id) "
                "THEN user_id ELSE NULL END",
                "down": "user_id",
            }
        }
    ]
    migration = plan(db, "m_fk", ops)
    run_to_soak(db, migration)
    with versions(db, migration) as (old, new):
        old.execute("INSERT INTO reviews (id, product, user_id) VALUES (3000, 'x', 42)")  # no such user
        assert new.execute("SELECT user_id FROM reviews WHERE id = 3000").fetchone() == (None,)
        assert old.execute("SELECT user_id FROM reviews WHERE id = 3000").fetchone() == (42,)
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            new.execute("INSERT INTO reviews (id, product, user_id) VALUES (3001, 'x', 42)")
        new.execute("INSERT INTO reviews (id, product, user_id) VALUES (3002, 'x', 2)")
        assert old.execute("SELECT user_id FROM reviews WHERE id = 3002").fetchone() == (2,)
        assert new.execute("SELECT count(*) FROM reviews WHERE user_id = 99").fetchone() == (0,)  # backfilled
    apply(db, migration.contract)
    expected = reference(
        pg_server_dsn,
        """
        CREATE TABLE users (id int PRIMARY KEY, name text);
        CREATE TABLE reviews (id int PRIMARY KEY, product text NOT NULL, review text, rating text DEFAULT '3',
                              user_id int, CONSTRAINT review_not_spam CHECK (review <> 'spam'),
                              CONSTRAINT fk_users_id FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE);
        CREATE INDEX reviews_rating_idx ON reviews (rating);
        """,
    )
    assert dump(db, "public") == expected


def test_comment_default_and_name_need_no_copy(db: str, pg_server_dsn: str) -> None:
    ops = [
        {
            "alter_column": {
                "table": "reviews",
                "column": "rating",
                "default": "'5'",
                "comment": "stars",
                "name": "stars",
            }
        }
    ]
    migration = plan(db, "m_inplace", ops)
    assert migration.backfills == ()
    before = dump(db)
    run_to_soak(db, migration)
    with versions(db, migration) as (old, new):
        new.execute("INSERT INTO reviews (id, product) VALUES (4000, 'x')")
        assert old.execute("SELECT rating FROM reviews WHERE id = 4000").fetchone() == ("5",)
        assert new.execute("SELECT stars FROM reviews WHERE id = 4000").fetchone() == ("5",)
    apply(db, migration.rollback)
    assert dump(db) == before
    migration = plan(db, "m_inplace", ops)
    run_to_soak(db, migration)
    apply(db, migration.contract)
    expected = reference(
        pg_server_dsn,
        """
        CREATE TABLE users (id int PRIMARY KEY, name text);
        CREATE TABLE reviews (id int PRIMARY KEY, product text NOT NULL, review text, stars text DEFAULT '5',
                              user_id int, CONSTRAINT review_not_spam CHECK (review <> 'spam'));
        CREATE INDEX reviews_rating_idx ON reviews (stars);
        COMMENT ON COLUMN reviews.stars IS 'stars';
        """,
    )
    assert dump(db, "public") == expected


BAD_INPUT: list[tuple[dict[str, Any], type[errors.OperationError], str]] = [
    ({"table": "nope", "column": "x", "type": "int"}, errors.TableNotFoundError, "table"),
    ({"table": "reviews", "column": "nope", "type": "int"}, errors.ColumnNotFoundError, "column"),
    ({"table": "reviews", "column": "id", "type": "bigint"}, errors.UnsupportedError, "column"),
    ({"table": "reviews", "column": "rating"}, errors.OperationError, ""),
    (
        {"table": "reviews", "column": "rating", "type": "int", "down": "event_name"},
        errors.ExpressionError,
        "down",
    ),
    (
        {"table": "reviews", "column": "rating", "type": "int", "up": "ratin::int"},
        errors.ExpressionError,
        "up",
    ),
    ({"table": "reviews", "column": "review", "type": "varchar(20)"}, errors.UnsupportedError, "type"),
    ({"table": "reviews", "column": "rating", "name": "product"}, errors.ColumnExistsError, "name"),
    (
        {"table": "reviews", "column": "rating", "unique": {"name": "reviews_pkey"}},
        errors.IndexExistsError,
        "unique",
    ),
    (
        {
            "table": "reviews",
            "column": "user_id",
            "references": {"name": "f", "table": "users", "column": "x"},
        },
        errors.ColumnNotFoundError,
        "references.column",
    ),
]


def test_bad_input_names_operation_and_field(db: str) -> None:
    before = dump(db)
    for fields, error, field in BAD_INPUT:
        ops = [{"rename_table": {"from": "users", "to": "people"}}, {"alter_column": fields}]
        if fields.get("references"):
            fields["references"]["table"] = "people"  # the second operation sees what the first one changed
        with pytest.raises(error) as caught:
            plan(db, "m_bad", ops)
        assert caught.value.index == 1 and caught.value.field == field, fields
        assert f"operations[1].alter_column{'.' + field if field else ''}:" in str(caught.value)
    assert dump(db) == before  # planning changes nothing


def test_up_that_does_not_parse_is_refused_at_load() -> None:
    from pydantic import ValidationError

    from airflow_provider_expand.spec.operations import parse_operations

    with pytest.raises(ValidationError, match=r"alter_column\.up"):
        parse_operations(
            [{"alter_column": {"table": "t", "column": "c", "type": "int", "up": "1) FROM x; (1"}}]
        )


def test_writers_during_the_backfill_leave_both_columns_consistent(
    pg_conn: psycopg.Connection, pg_dsn: str
) -> None:
    pg_conn.execute("CREATE TABLE scores (id int PRIMARY KEY, points text NOT NULL, note text)")
    pg_conn.execute("INSERT INTO scores SELECT i, (i % 50)::text, 'n' FROM generate_series(1, 600) i")
    ops = [
        {
            "alter_column": {
                "table": "scores",
                "column": "points",
                "type": "integer",
                "up": "CAST(points AS integer)",
                "down": "CAST(points AS text)",
            }
        }
    ]
    migration = plan(pg_dsn, "m_busy", ops)
    apply(pg_dsn, migration.expand)
    with versions(pg_dsn, migration) as (old, new):

        def old_code() -> None:
            for i in range(1, 600, 7):
                old.execute("UPDATE scores SET points = %s WHERE id = %s", (str(i * 3), i))
                old.execute("UPDATE scores SET note = 'old' WHERE id = %s", (i + 1,))

        def new_code() -> None:
            for i in range(4, 600, 11):
                new.execute("UPDATE scores SET points = %s WHERE id = %s", (i * 5, i))
                new.execute("UPDATE scores SET note = 'new' WHERE id = %s", (i + 2,))

        together(lambda: backfill(pg_dsn, migration), old_code, new_code)
    unsynced = pg_conn.execute(
        "SELECT count(*) FROM scores WHERE _expand_new_points IS DISTINCT FROM points::integer"
    ).fetchone()
    assert unsynced == (0,)
    assert pg_conn.execute("SELECT count(*) FROM scores WHERE _expand_needs_backfill").fetchone() == (0,)
    apply(pg_dsn, migration.contract)
    assert pg_conn.execute("SELECT points FROM scores WHERE id = 8").fetchone() == (24,)  # old code's write
    assert pg_conn.execute("SELECT points FROM scores WHERE id = 4").fetchone() == (20,)  # new code's write


def test_failed_unique_build_rolls_back_to_the_schema_before(db: str) -> None:
    """``up`` that leaves duplicates: the index task fails, nothing half-built stays after the rollback."""
    from airflow_provider_expand.engine.index.build import IndexBuildError

    ops = [
        {
            "alter_column": {
                "table": "reviews",
                "column": "product",
                "unique": {"name": "reviews_product_key"},
                "up": "'same'",
                "down": "product",
            }
        }
    ]
    migration = plan(db, "m_dupes", ops)
    before = dump(db)
    apply(db, migration.expand)
    backfill(db, migration)
    with pytest.raises(IndexBuildError, match="is duplicated"):
        indexes(db, migration)
    apply(db, migration.rollback)
    assert dump(db) == before
    with psycopg.connect(db) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_class WHERE relname LIKE '%%reviews_product%%'"
        ).fetchone() == (0,)


def test_retype_and_rename_in_one_operation(db: str, pg_server_dsn: str) -> None:
    ops = [
        {
            "alter_column": {
                "table": "reviews",
                "column": "rating",
                "type": "integer",
                "name": "stars",
                "default": "3",
                "up": "CAST(rating AS integer)",
                "down": "CAST(stars AS text)",
            }
        }
    ]
    migration = plan(db, "m_stars", ops)
    run_to_soak(db, migration)
    with versions(db, migration) as (old, new):
        new.execute("INSERT INTO reviews (id, product, stars) VALUES (6000, 'x', 4)")
        assert old.execute("SELECT rating FROM reviews WHERE id = 6000").fetchone() == ("4",)
        old.execute("INSERT INTO reviews (id, product, rating) VALUES (6001, 'x', '2')")
        assert new.execute("SELECT stars FROM reviews WHERE id = 6001").fetchone() == (2,)
    apply(db, migration.contract)
    expected = reference(
        pg_server_dsn,
        """
        CREATE TABLE users (id int PRIMARY KEY, name text);
        CREATE TABLE reviews (id int PRIMARY KEY, product text NOT NULL, review text, user_id int,
                              stars integer DEFAULT 3, CONSTRAINT review_not_spam CHECK (review <> 'spam'));
        CREATE INDEX reviews_rating_idx ON reviews (stars);
        """,
    )
    assert dump(db, "public") == expected
