"""The column and constraint operations end to end through ``dag.test()``: expand, backfill, index, soak,
contract with an old-code writer (tables) and a new-code writer (the version schema) running meanwhile;
then a failure after the expand, which rolls back to the same schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from tests.dags.operations_support import (
    fail_after_expand,
    ledger_phase,
    migrate_with_both_writing,
)
from tests.engine.operations.conftest import build, dump_schema

BEFORE = """
CREATE TABLE users (id int PRIMARY KEY);
CREATE TABLE reviews (id bigserial PRIMARY KEY, product text NOT NULL, rating text, review text,
                      user_id int, CONSTRAINT review_length CHECK (length(review) > 1));
INSERT INTO users VALUES (1), (2);
INSERT INTO reviews (product, rating, review, user_id)
SELECT 'p' || g, (g % 5)::text, CASE WHEN g % 3 = 0 THEN NULL ELSE 'review ' || g END, 1 + g % 3
FROM generate_series(1, 2000) g;
"""
OPERATIONS: list[dict[str, Any]] = [
    {
        "alter_column": {
            "table": "reviews",
            "column": "rating",
            "type": "integer",
            "up": "CAST(rating AS integer)",
            "down": "CAST(rating AS text)",
        }
    },
    {
        "alter_column": {
            "table": "reviews",
            "column": "review",
            "nullable": False,
            "unique": {"name": "reviews_review_unique"},
            "up": "SELECT CASE WHEN review IS NULL THEN product || ' is good' ELSE review END",
            "down": "review",
        }
    },
    {
        "alter_column": {
            "table": "reviews",
            "column": "user_id",
            "references": {"name": "fk_users_id", "table": "users", "column": "id"},
            "up": "SELECT CASE WHEN EXISTS (SELECT 1 FROM users WHERE users.id = user_id) "
            "THEN user_id ELSE NULL END",
            "down": "user_id",
        }
    },
    {"rename_constraint": {"table": "reviews", "from": "review_length", "to": "review_length_check"}},
    {"set_replica_identity": {"table": "reviews", "identity": {"type": "full"}}},
]
AFTER = """
CREATE TABLE users (id int PRIMARY KEY);
CREATE TABLE reviews (id bigserial PRIMARY KEY, product text NOT NULL, rating integer, review text NOT NULL,
                      user_id int,
                      CONSTRAINT review_length_check CHECK (length(review) > 1),
                      CONSTRAINT reviews_review_unique UNIQUE (review),
                      CONSTRAINT fk_users_id FOREIGN KEY (user_id) REFERENCES users(id));
ALTER TABLE reviews REPLICA IDENTITY FULL;
"""


OLD_CODE = {
    "insert": "INSERT INTO reviews (product, rating, review, user_id) VALUES ('old ' || %(i)s::text, '4', NULL, 9) "
    "RETURNING id",
    "update": "UPDATE reviews SET rating = '1' WHERE id = 500 + %(i)s",
}
NEW_CODE = {
    "insert": "INSERT INTO reviews (product, rating, review, user_id) VALUES ('new', 2, 'new review ' || %(i)s::text, 2) "
    "RETURNING id",
    "update": "UPDATE reviews SET rating = 3 WHERE id = 1000 + %(i)s",
}


def test_column_operations_run_to_completion_with_both_code_versions_writing(
    tmp_path: Path,
    airflow_home: Path,
    airflow_conn: dict[str, str],
    pg_dsn: str,
    reference_dsn: str,
    migration_id: str,
) -> None:
    result, old, new = migrate_with_both_writing(
        tmp_path, airflow_home, pg_dsn, migration_id, BEFORE, OPERATIONS, OLD_CODE, NEW_CODE
    )
    assert result["backfill.reviews"] == "success" and result["index.reviews_review_unique"] == "success", (
        result
    )
    assert old.gone and old.rows["insert"] and new.rows["insert"]
    build(reference_dsn, AFTER)
    assert dump_schema(pg_dsn) == dump_schema(reference_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT rating, review FROM reviews WHERE id = 3").fetchone() == (3, "p3 is good")
        old_row = conn.execute(
            "SELECT rating, review = product || ' is good', user_id FROM reviews WHERE id = %s",
            (old.ids("insert")[0],),
        )
        assert old_row.fetchone() == (4, True, None)  # up for old code's writes
        new_row = conn.execute(
            "SELECT rating, review LIKE 'new review %%', user_id FROM reviews WHERE id = %s",
            (new.ids("insert")[0],),
        )
        assert new_row.fetchone() == (
            2,
            True,
            2,
        )  # down kept them for old code, the contract kept the new column
        assert conn.execute("SELECT count(*) FROM reviews WHERE review IS NULL").fetchone() == (0,)
    assert ledger_phase(pg_dsn, migration_id) == "completed"


def test_failure_after_expand_rolls_back_to_the_same_schema(
    tmp_path: Path, airflow_home: Path, airflow_conn: dict[str, str], pg_dsn: str, migration_id: str
) -> None:
    fail_after_expand(tmp_path, airflow_home, pg_dsn, migration_id, BEFORE, OPERATIONS)
