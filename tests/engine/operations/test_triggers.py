"""The up/down fill triggers on real PostgreSQL: each version's writes reach the other's column."""

from __future__ import annotations

import psycopg
import pytest

from airflow_provider_expand.engine.operations import triggers
from airflow_provider_expand.engine.operations.base import PlanContext
from airflow_provider_expand.engine.operations.planner import marker_expand
from airflow_provider_expand.engine.operations.triggers import ExpressionError, parse_expression

V = "v_retype"
MARKER = "_expand_needs_backfill"


def _install(conn: psycopg.Connection, *, marker: bool = True) -> None:
    conn.execute("CREATE TABLE reviews (id int PRIMARY KEY, product text, rating text)")
    conn.execute("INSERT INTO reviews VALUES (10, 'old row', '2'), (11, 'old row', '3')")  # before the expand
    conn.execute("ALTER TABLE reviews ADD COLUMN _expand_new_rating integer")
    if marker:  # the planner's marker column and the trigger that clears it on every write
        for statement in marker_expand(PlanContext(migration_id=V), "reviews").statements:
            conn.execute(statement)  # type: ignore[arg-type]
    conn.execute(f"CREATE SCHEMA {V}")
    conn.execute(
        f"CREATE VIEW {V}.reviews AS SELECT id, product, _expand_new_rating AS rating FROM public.reviews"
    )
    up, down = triggers.duplicate_fills(
        schema="public",
        table="reviews",
        old_column="rating",
        new_column="_expand_new_rating",
        up=parse_expression("CAST(rating AS integer)"),
        down=parse_expression("SELECT CASE WHEN rating IS NULL THEN NULL ELSE rating::text || '/5' END"),
        old_columns={"id": "id", "product": "product", "rating": "rating"},
        new_columns={"id": "id", "product": "product", "rating": "_expand_new_rating"},
        versioned_schema=V,
        marker=MARKER,
    )
    for fill in (up, down):
        for statement in triggers.create_fill(fill):
            conn.execute(statement)


def test_each_version_sees_the_others_writes(pg_conn: psycopg.Connection, pg_dsn: str) -> None:
    _install(pg_conn)
    with psycopg.connect(pg_dsn, autocommit=True) as old, psycopg.connect(pg_dsn, autocommit=True) as new:
        new.execute(f"SET search_path = {V}, public")
        old.execute("INSERT INTO reviews VALUES (1, 'tea', '4')")
        new.execute("INSERT INTO reviews (id, product, rating) VALUES (2, 'cake', 5)")
        assert new.execute("SELECT rating FROM reviews WHERE id = 1").fetchone() == (4,)
        assert old.execute("SELECT rating FROM reviews WHERE id = 2").fetchone() == ("5/5",)
        # updates in both directions, and an unrelated update does not recompute the other column
        old.execute("UPDATE reviews SET rating = '3' WHERE id = 2")
        assert new.execute("SELECT rating FROM reviews WHERE id = 2").fetchone() == (3,)
        new.execute("UPDATE reviews SET rating = 1 WHERE id = 1")
        assert old.execute("SELECT rating FROM reviews WHERE id = 1").fetchone() == ("1/5",)
        old.execute("UPDATE reviews SET product = 'green tea' WHERE id = 1")
        assert new.execute("SELECT rating, product FROM reviews WHERE id = 1").fetchone() == (1, "green tea")
        # extra schemas after the versioned one still count as new code; the table's schema first is old code
        new.execute(f"SET search_path = {V}, public, pg_catalog")
        new.execute("UPDATE reviews SET rating = 2 WHERE id = 2")
        assert old.execute("SELECT rating FROM reviews WHERE id = 2").fetchone() == ("2/5",)
        old.execute(f"SET search_path = public, {V}")
        old.execute("UPDATE reviews SET rating = '5' WHERE id = 2")
        assert new.execute("SELECT rating FROM reviews WHERE id = 2").fetchone() == (5,)
        # rows written since the expand need no backfill; rows from before do until a version touches them
        marked = old.execute(f"SELECT id FROM reviews WHERE {MARKER} ORDER BY id").fetchall()
        assert marked == [(10,), (11,)]
        new.execute("UPDATE reviews SET product = 'touched' WHERE id = 10")  # new code, column not set
        old.execute("UPDATE reviews SET product = 'touched' WHERE id = 11")  # old code
        rows = new.execute(f"SELECT id, rating, {MARKER} FROM public.reviews WHERE id >= 10 ORDER BY id")
        assert rows.fetchall() == [(10, "2", False), (11, "3", False)]
        assert new.execute("SELECT rating FROM reviews WHERE id >= 10 ORDER BY id").fetchall() == [(2,), (3,)]


def test_fills_work_without_the_marker_column(pg_conn: psycopg.Connection, pg_dsn: str) -> None:
    """Before the planner adds the marker (or after it dropped it) every write still goes through."""
    _install(pg_conn, marker=False)
    with psycopg.connect(pg_dsn, autocommit=True) as new:
        new.execute(f"SET search_path = {V}, public")
        pg_conn.execute("UPDATE reviews SET product = 'x' WHERE id = 10")  # old code, source unchanged
        pg_conn.execute("UPDATE reviews SET rating = '4' WHERE id = 10")
        new.execute("UPDATE reviews SET product = 'y' WHERE id = 11")  # new code, column not set
        new.execute("INSERT INTO reviews (id, product, rating) VALUES (12, 'z', 1)")
        assert new.execute("SELECT id, rating FROM reviews ORDER BY id").fetchall() == [
            (10, 4),
            (11, None),
            (12, 1),
        ]
        # without the marker, old code's update computes the copy (in the expand, before the planner adds
        # the marker, any row may be unfilled); new code does not fill lazily (contract, rollback)
        pg_conn.execute("UPDATE reviews SET product = 'x2' WHERE id = 11")
        assert new.execute("SELECT rating FROM reviews WHERE id = 11").fetchone() == (3,)
        assert pg_conn.execute("SELECT rating FROM reviews WHERE id = 12").fetchone() == ("1/5",)


def test_drop_fill_removes_trigger_and_function(pg_conn: psycopg.Connection) -> None:
    _install(pg_conn)
    names = [
        triggers.trigger_name("up", "reviews", "_expand_new_rating"),
        triggers.trigger_name("down", "reviews", "rating"),
    ]
    for name in names:
        for statement in triggers.drop_fill("public", "reviews", name):
            pg_conn.execute(statement)
    triggers_left = pg_conn.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal").fetchall()
    assert triggers_left == [("_expand_backfill_marker",)]  # the planner's, not ours
    functions = pg_conn.execute("SELECT proname FROM pg_proc WHERE proname LIKE '\\_expand\\_%' ORDER BY 1")
    assert functions.fetchall() == [("_expand_backfill_marker_reviews",)]


def test_fill_from_old_code_only_acts_for_old_code(pg_conn: psycopg.Connection, pg_dsn: str) -> None:
    pg_conn.execute("CREATE TABLE users (id int PRIMARY KEY, name text, slug text)")
    pg_conn.execute(f"CREATE SCHEMA {V}")
    pg_conn.execute(f"CREATE VIEW {V}.users AS SELECT * FROM public.users")
    fill = triggers.fill_from_old_code(
        schema="public",
        table="users",
        column="slug",
        up=parse_expression("lower(name) || '$expand0$'"),  # a dollar tag inside the body picks another
        old_columns={"id": "id", "name": "name"},
        versioned_schema=V,
        marker=None,
    )
    for statement in triggers.create_fill(fill):
        pg_conn.execute(statement)
    with psycopg.connect(pg_dsn, autocommit=True) as new:
        new.execute(f"SET search_path = {V}, public")
        pg_conn.execute("INSERT INTO users (id, name) VALUES (1, 'Ann')")
        new.execute("INSERT INTO users (id, name, slug) VALUES (2, 'Bob', 'bobby')")
        rows = pg_conn.execute("SELECT id, slug FROM users ORDER BY id").fetchall()
    assert rows == [(1, "ann$expand0$"), (2, "bobby")]


@pytest.mark.parametrize(
    "text",
    ["", "1) FROM pg_class WHERE (true", "1), (2", "1); DROP TABLE users; SELECT (1", "name +", "1 AS x"],
)
def test_expression_that_is_not_one_scalar_is_refused(text: str) -> None:
    with pytest.raises(ExpressionError):
        parse_expression(text)


def test_expression_is_deparsed_and_its_columns_known() -> None:
    expr = parse_expression(
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM users WHERE users.id = user_id) THEN user_id END"
    )
    assert expr.text.startswith("((SELECT CASE")
    assert expr.columns == {"user_id"}
    renamed = triggers.rename_columns(parse_expression("length(title) > 3"), {"title": "_expand_new_title"})
    assert renamed.text == "(length(_expand_new_title) > 3)"


def test_long_names_stay_distinct() -> None:
    a = triggers.trigger_name("up", "t" * 60, "a" * 30)
    b = triggers.trigger_name("up", "t" * 60, "a" * 29 + "b")
    assert len(a) <= 63 and len(b) <= 63 and a != b
