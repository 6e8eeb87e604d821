"""The column and constraint operations end to end through ``dag.test()``: expand, backfill, index, soak,
contract with an old-code writer (tables) and a new-code writer (the version schema) running meanwhile;
then a failure after the expand, which rolls back to the same schema."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg import sql

from airflow_provider_expand.engine.ledger.store import Ledger
from tests.dags.harness import install_dag_file, run_dag, states
from tests.engine.operations.conftest import build, dump_schema, fresh_database

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


def _folder(tmp: Path, migration_id: str, **extra: Any) -> Path:
    folder = tmp / "migrations" / migration_id
    folder.mkdir(parents=True)
    spec = {
        "id": migration_id,
        "postgres_conn_id": "app_db",
        "lock_timeout": "500ms",
        "retries": 0,
        "soak": "2s",
        "operations": OPERATIONS,
        **extra,
    }
    (folder / "migration.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder


class _Writer(threading.Thread):
    """One code version inserting and updating until stopped (old code: until the contract took its columns)."""

    def __init__(self, dsn: str, version_schema: str | None, migration_id: str) -> None:
        super().__init__(daemon=True)
        self.dsn, self.version_schema, self.migration_id = dsn, version_schema, migration_id
        self.stop = threading.Event()
        self.inserted: list[int] = []
        self.errors: list[str] = []
        self.gone = False

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            i = 0
            while not self.stop.is_set() and not self.gone:
                i += 1
                try:
                    if self.version_schema is None:
                        row = conn.execute(
                            "INSERT INTO reviews (product, rating, review, user_id) VALUES (%s, '4', NULL, 9) "
                            "RETURNING id",
                            (f"old {i}",),
                        ).fetchone()
                        conn.execute("UPDATE reviews SET rating = '1' WHERE id = %s", (500 + i,))
                    else:
                        found = conn.execute("SELECT to_regnamespace(%s)", (self.version_schema,)).fetchone()
                        if not found or found[0] is None:  # the expand has not created the views yet
                            time.sleep(0.05)
                            continue
                        conn.execute(
                            sql.SQL("SET search_path = {}").format(sql.Identifier(self.version_schema))
                        )
                        row = conn.execute(
                            "INSERT INTO reviews (product, rating, review, user_id) VALUES ('new', 2, %s, 2) "
                            "RETURNING id",
                            (f"new review {i}",),
                        ).fetchone()
                        conn.execute("UPDATE reviews SET rating = 3 WHERE id = %s", (1000 + i,))
                    assert row is not None
                    self.inserted.append(int(row[0]))
                except psycopg.Error as exc:
                    if self.version_schema is None and self._contracting():
                        self.gone = True
                    else:
                        self.errors.append(str(exc))
                time.sleep(0.01)

    def _contracting(self) -> bool:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            record = Ledger().get(conn, self.migration_id)
        return record is not None and record.phase in ("contracting", "completed")


def test_column_operations_run_to_completion_with_both_code_versions_writing(
    tmp_path: Path, airflow_home: Path, airflow_conn: dict[str, str], pg_dsn: str, pg_server_dsn: str
) -> None:
    migration_id = f"alter_e2e_{uuid.uuid4().hex[:8]}"
    build(pg_dsn, BEFORE)
    dag_file = install_dag_file(airflow_home, _folder(tmp_path, migration_id).parent, migration_id)
    old, new = _Writer(pg_dsn, None, migration_id), _Writer(pg_dsn, migration_id, migration_id)
    old.start()
    new.start()
    try:
        run = run_dag(dag_file, migration_id)
    finally:
        old.stop.set()
        new.stop.set()
        old.join(10)
        new.join(10)
    result = states(run)
    assert str(run.state) == "success", result
    assert result["backfill.reviews"] == "success" and result["index.reviews_review_unique"] == "success", (
        result
    )
    assert not old.errors and not new.errors, (old.errors[:3], new.errors[:3])
    assert old.gone and old.inserted and new.inserted
    with fresh_database(pg_server_dsn) as reference:
        build(reference, AFTER)
        assert dump_schema(pg_dsn) == dump_schema(reference)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT rating, review FROM reviews WHERE id = 3").fetchone() == (3, "p3 is good")
        old_row = conn.execute(
            "SELECT rating, review = product || ' is good', user_id FROM reviews WHERE id = %s",
            (old.inserted[0],),
        )
        assert old_row.fetchone() == (4, True, None)  # up for old code's writes
        new_row = conn.execute(
            "SELECT rating, review LIKE 'new review %%', user_id FROM reviews WHERE id = %s",
            (new.inserted[0],),
        )
        assert new_row.fetchone() == (
            2,
            True,
            2,
        )  # down kept them for old code, the contract kept the new column
        assert conn.execute("SELECT count(*) FROM reviews WHERE review IS NULL").fetchone() == (0,)


def test_failure_after_expand_rolls_back_to_the_same_schema(
    tmp_path: Path, airflow_home: Path, airflow_conn: dict[str, str], pg_dsn: str
) -> None:
    migration_id = f"alter_fail_{uuid.uuid4().hex[:8]}"
    build(pg_dsn, BEFORE)
    before = dump_schema(pg_dsn)
    failing = {"name": "injected failure", "sql": "SELECT 1", "expect": 2, "after": "expand"}
    dag_file = install_dag_file(
        airflow_home, _folder(tmp_path, migration_id, verify=[failing]).parent, migration_id
    )
    run = run_dag(dag_file, migration_id)
    result = states(run)
    assert str(run.state) == "failed", result
    assert result["expand"] == "success" and result["rollback"] == "success", result
    assert dump_schema(pg_dsn) == before
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT to_regnamespace(%s)", (migration_id,)).fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal").fetchone() == (0,)
