"""The index builder against a real PostgreSQL: invalid indexes, duplicates, progress, lock retries, drops."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from airflow_provider_expand.engine.database import Connector
from airflow_provider_expand.engine.index.build import (
    IndexBuildError,
    IndexDefinitionConflictError,
    IndexSpec,
    IndexSpecError,
    LockRetriesExhaustedError,
    build_index,
    drop_index,
)
from airflow_provider_expand.engine.ledger.store import Ledger

LOG = logging.getLogger("tests.engine.index")
MIGRATION = "users_email_index"
FAST: dict[str, Any] = {
    "lock_timeout": timedelta(milliseconds=300),
    "progress_interval": timedelta(seconds=1),
}


@pytest.fixture
def users(pg_conn: psycopg.Connection) -> psycopg.Connection:
    """A ``users`` table of 2,000 rows with unique e-mails; half of them soft-deleted."""
    pg_conn.execute("CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL, deleted_at timestamptz)")
    pg_conn.execute(
        "INSERT INTO users SELECT g, 'user' || g || '@example.com', CASE WHEN g % 2 = 0 THEN now() END"
        " FROM generate_series(1, 2000) g"
    )
    return pg_conn


def _validity(conn: psycopg.Connection, index: str) -> bool | None:
    """``indisvalid`` of ``public.<index>``, or None when there is no such index."""
    row = conn.execute(
        "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(%s)", (f"public.{index}",)
    ).fetchone()
    return None if row is None else bool(row[0])


def _ledger_exists(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT to_regnamespace('airflow_expand') IS NOT NULL").fetchone() == (True,)


def _hold_for(conn: psycopg.Connection, seconds: float) -> threading.Timer:
    """End ``conn``'s open transaction after ``seconds``, from a timer thread."""
    timer = threading.Timer(seconds, conn.rollback)
    timer.start()
    return timer


def test_builds_a_valid_partial_index_then_is_a_no_op(
    users: psycopg.Connection, pg_connect: Connector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOG.name)
    spec = IndexSpec(name="idx_users_email", table="users", columns=("email",), where="deleted_at IS NULL")

    first = build_index(pg_connect, spec, migration_id=MIGRATION, log=LOG, **FAST)

    assert (first.index, first.action, first.builds) == ("public.idx_users_email", "created", 1)
    assert first.statements == (
        'CREATE INDEX CONCURRENTLY "idx_users_email" ON "public"."users" ("email") WHERE deleted_at IS NULL',
    )
    assert _validity(users, "idx_users_email") is True
    definition = users.execute("SELECT pg_get_indexdef('idx_users_email'::regclass)").fetchone()
    assert definition == (
        "CREATE INDEX idx_users_email ON public.users USING btree (email) WHERE (deleted_at IS NULL)",
    )
    step = Ledger().step(users, MIGRATION, "index:idx_users_email")
    assert step is not None and step.status == "success" and step.finished_at is not None

    # Same spec written differently (parentheses, case): PostgreSQL's normalised form is what is compared.
    again = IndexSpec(
        name="idx_users_email", table="public.users", columns=("email",), where="(DELETED_AT is null)"
    )
    second = build_index(pg_connect, again, migration_id=MIGRATION, log=LOG, **FAST)
    assert (second.action, second.builds, second.statements) == ("exists", 0, ())
    assert "matches the spec: nothing to do" in caplog.text


def test_an_invalid_index_of_the_same_name_is_dropped_and_rebuilt(
    users: psycopg.Connection, pg_connect: Connector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOG.name)
    users.execute("UPDATE users SET email = 'dup@example.com' WHERE id IN (7, 8)")
    with pytest.raises(psycopg.errors.UniqueViolation):
        users.execute("CREATE UNIQUE INDEX CONCURRENTLY idx_users_email_uniq ON users (email)")
    assert _validity(users, "idx_users_email_uniq") is False  # what a failed build leaves behind
    users.execute("UPDATE users SET email = 'user8@example.com' WHERE id = 8")

    spec = IndexSpec(name="idx_users_email_uniq", table="users", columns=("email",), unique=True)
    result = build_index(pg_connect, spec, migration_id=MIGRATION, log=LOG, **FAST)

    assert (result.action, result.builds) == ("rebuilt", 1)
    assert result.statements[0] == 'DROP INDEX CONCURRENTLY IF EXISTS "public"."idx_users_email_uniq"'
    assert _validity(users, "idx_users_email_uniq") is True
    assert "is INVALID (left by an earlier failed build): dropping it concurrently" in caplog.text
    with pytest.raises(psycopg.errors.UniqueViolation):  # and it really enforces uniqueness now
        users.execute("INSERT INTO users VALUES (5000, 'user1@example.com')")


def test_a_unique_build_over_duplicates_fails_clearly_and_leaves_no_invalid_index(
    users: psycopg.Connection, pg_connect: Connector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOG.name)
    users.execute("UPDATE users SET email = 'dup@example.com' WHERE id IN (7, 8)")
    spec = IndexSpec(name="idx_users_email_uniq", table="users", columns=("email",), unique=True)

    with pytest.raises(IndexBuildError) as failure:
        build_index(pg_connect, spec, migration_id=MIGRATION, log=LOG, max_rebuilds=1, **FAST)

    message = str(failure.value)
    assert "public.idx_users_email_uniq" in message
    assert "Key (email)=(dup@example.com) is duplicated" in message
    assert failure.value.builds == 2  # the build and one rebuild
    assert _validity(users, "idx_users_email_uniq") is None  # nothing left, valid or not
    assert caplog.text.count("is INVALID (left by the failed build above)") == 2
    step = Ledger().step(users, MIGRATION, "index:idx_users_email_uniq")
    assert step is not None and step.status == "failed"
    assert step.error is not None and "Key (email)=(dup@example.com) is duplicated" in step.error


def test_progress_of_a_slow_build_is_logged_with_percentages(
    users: psycopg.Connection, pg_connect: Connector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOG.name)
    # An IMMUTABLE-declared predicate that sleeps 1 ms per row: the table scan takes ~2 s.
    users.execute(
        "CREATE FUNCTION slow_true(bigint) RETURNS boolean LANGUAGE plpgsql IMMUTABLE"
        " AS $$ BEGIN PERFORM pg_sleep(0.001); RETURN true; END $$"
    )
    spec = IndexSpec(name="idx_users_slow", table="users", columns=("id",), where="slow_true(id)")

    build_index(
        pg_connect,
        spec,
        migration_id=MIGRATION,
        log=LOG,
        lock_timeout=timedelta(seconds=1),
        progress_interval=timedelta(milliseconds=500),
    )

    lines = [r.getMessage() for r in caplog.records if "building index: scanning table" in r.getMessage()]
    assert len(lines) >= 2, caplog.text
    assert all(
        line.startswith("index public.idx_users_slow: building index: scanning table — blocks ")
        for line in lines
    )
    assert any("%)" in line for line in lines)
    assert _validity(users, "idx_users_slow") is True


def test_waiting_for_old_snapshots_is_logged_and_not_a_lock_timeout(
    users: psycopg.Connection, pg_dsn: str, pg_connect: Connector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOG.name)
    with psycopg.connect(pg_dsn, application_name="old-reader") as reader:
        reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        reader.execute("SELECT 1 FROM users LIMIT 1")  # a snapshot older than the build
        timer = _hold_for(reader, 3.0)
        started = time.monotonic()
        spec = IndexSpec(name="idx_users_deleted", table="users", columns=("deleted_at",))
        result = build_index(
            pg_connect,
            spec,
            migration_id=MIGRATION,
            log=LOG,
            lock_timeout=timedelta(milliseconds=500),  # far below the 3 s wait: it must not apply
            progress_interval=timedelta(seconds=1),
        )
        elapsed = time.monotonic() - started
        timer.join()

    assert result.action == "created" and result.builds == 1
    assert elapsed >= 2.5
    assert _validity(users, "idx_users_deleted") is True
    waits = [r.getMessage() for r in caplog.records if "waiting for old snapshots" in r.getMessage()]
    assert len(waits) >= 2, caplog.text
    assert "not a lock timeout" in waits[0]
    assert "application 'old-reader'" in waits[0]
    assert "lock not granted" not in caplog.text


def test_a_held_table_lock_is_retried_until_released(
    users: psycopg.Connection, pg_dsn: str, pg_connect: Connector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOG.name)
    with psycopg.connect(pg_dsn) as blocker:
        blocker.execute("LOCK TABLE users IN SHARE UPDATE EXCLUSIVE MODE")  # what CIC needs
        timer = _hold_for(blocker, 2.5)
        started = time.monotonic()
        spec = IndexSpec(name="idx_users_email", table="users", columns=("email",))
        result = build_index(pg_connect, spec, migration_id=MIGRATION, log=LOG, ddl_retries=20, **FAST)
        elapsed = time.monotonic() - started
        timer.join()

    assert result.action == "created" and _validity(users, "idx_users_email") is True
    assert elapsed >= 2.5
    gave_up = [
        r.getMessage() for r in caplog.records if "for a table lock (lock_timeout 0.3 s)" in r.getMessage()
    ]
    assert len(gave_up) >= 2, caplog.text
    assert all(0.3 <= float(line.split("waited ")[1].split(" s")[0]) < 1.0 for line in gave_up)
    assert "held by pid" in gave_up[0]
    assert "lock not granted within 0.3 s (try 1 of 21); retrying in" in caplog.text


def test_lock_retries_run_out_with_a_clear_error_and_no_leftover(
    users: psycopg.Connection, pg_dsn: str, pg_connect: Connector
) -> None:
    with psycopg.connect(pg_dsn) as blocker:
        blocker.execute("LOCK TABLE users IN SHARE UPDATE EXCLUSIVE MODE")
        spec = IndexSpec(name="idx_users_email", table="users", columns=("email",))
        with pytest.raises(LockRetriesExhaustedError) as failure:
            build_index(pg_connect, spec, migration_id=MIGRATION, log=LOG, ddl_retries=2, **FAST)
        blocker.rollback()

    assert "index public.idx_users_email: no lock within lock_timeout 0.3 s on any of 3 tries" in str(
        failure.value
    )
    assert "held by pid" in str(failure.value)
    assert _validity(users, "idx_users_email") is None
    step = Ledger().step(users, MIGRATION, "index:idx_users_email")
    assert step is not None and step.status == "failed" and "no lock within" in (step.error or "")


def test_a_valid_index_with_another_definition_is_refused_untouched(
    users: psycopg.Connection, pg_connect: Connector
) -> None:
    users.execute("CREATE INDEX idx_users_email ON users (email)")
    spec = IndexSpec(name="idx_users_email", table="users", columns=("email",), where="deleted_at IS NULL")

    with pytest.raises(IndexDefinitionConflictError) as failure:
        build_index(pg_connect, spec, migration_id=MIGRATION, log=LOG, **FAST)

    assert "index public.idx_users_email already exists with a different definition" in str(failure.value)
    assert "WHERE deleted_at IS NULL" in str(failure.value)
    definition = users.execute("SELECT pg_get_indexdef('idx_users_email'::regclass)").fetchone()
    assert definition == ("CREATE INDEX idx_users_email ON public.users USING btree (email)",)


def test_dry_run_logs_the_statements_and_changes_nothing(
    users: psycopg.Connection, pg_connect: Connector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOG.name)
    users.execute("UPDATE users SET email = 'dup@example.com' WHERE id IN (7, 8)")
    with pytest.raises(psycopg.errors.UniqueViolation):
        users.execute("CREATE UNIQUE INDEX CONCURRENTLY idx_users_email_uniq ON users (email)")
    spec = IndexSpec(name="idx_users_email_uniq", table="users", columns=("email",), unique=True)

    result = build_index(pg_connect, spec, migration_id=MIGRATION, log=LOG, dry_run=True, **FAST)
    fresh = build_index(
        pg_connect,
        IndexSpec(name="idx_users_new", table="users", columns=("id", "email")),
        migration_id=MIGRATION,
        log=LOG,
        dry_run=True,
        **FAST,
    )
    dropped = drop_index(pg_connect, "idx_users_email_uniq", migration_id=MIGRATION, log=LOG, dry_run=True)

    assert result.action == "dry_run" and len(result.statements) == 2
    assert (
        'dry run: would run: DROP INDEX CONCURRENTLY IF EXISTS "public"."idx_users_email_uniq"' in caplog.text
    )
    assert 'dry run: would run: CREATE UNIQUE INDEX CONCURRENTLY "idx_users_email_uniq"' in caplog.text
    assert fresh.statements == (
        'CREATE INDEX CONCURRENTLY "idx_users_new" ON "public"."users" ("id", "email")',
    )
    assert dropped.action == "dry_run"
    assert _validity(users, "idx_users_email_uniq") is False  # still there, still invalid
    assert _validity(users, "idx_users_new") is None
    assert not _ledger_exists(users)


def test_drop_concurrently_is_idempotent(
    users: psycopg.Connection, pg_connect: Connector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOG.name)
    users.execute("CREATE INDEX idx_users_email ON users (email)")

    first = drop_index(pg_connect, "idx_users_email", migration_id=MIGRATION, log=LOG, **FAST)
    second = drop_index(
        pg_connect, "idx_users_email", migration_id=MIGRATION, log=LOG, schema="public", **FAST
    )

    assert (first.index, first.action) == ("public.idx_users_email", "dropped")
    assert first.statements == ('DROP INDEX CONCURRENTLY IF EXISTS "public"."idx_users_email"',)
    assert second.action == "absent" and second.statements == ()
    assert _validity(users, "idx_users_email") is None
    assert "index public.idx_users_email does not exist: nothing to drop" in caplog.text
    step = Ledger().step(users, MIGRATION, "drop_index:idx_users_email")
    assert step is not None and step.status == "success"


def test_drop_waits_out_a_held_lock(users: psycopg.Connection, pg_dsn: str, pg_connect: Connector) -> None:
    users.execute("CREATE INDEX idx_users_email ON users (email)")
    with psycopg.connect(pg_dsn) as blocker:
        blocker.execute("LOCK TABLE users IN SHARE UPDATE EXCLUSIVE MODE")
        timer = _hold_for(blocker, 1.5)
        result = drop_index(pg_connect, "idx_users_email", migration_id=MIGRATION, log=LOG, **FAST)
        timer.join()
    assert result.action == "dropped" and _validity(users, "idx_users_email") is None


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"table": "nope"}, "table", "table 'nope' does not exist"),
        ({"table": "parted"}, "table", "is a partitioned table"),
        ({"columns": ("email", "nope")}, "columns", "'nope' not in table public.users"),
        ({"columns": ()}, "columns", "needs at least one column"),
        ({"where": "deleted_at IS"}, "where", "does not parse"),
        ({"where": "true; DROP TABLE users"}, "where", "not several statements"),
        ({"where": "true ORDER BY 1"}, "where", "without other clauses"),
        ({"where": "id IN (SELECT 1)"}, "where", "cannot contain a subquery"),
        ({"where": "nope IS NULL"}, "where", 'column "nope" does not exist'),
        ({"where": "deleted_at > now()"}, "where", "IMMUTABLE"),
        ({"using": "nope"}, "using", "unknown index method 'nope'"),
        ({"using": "brin", "unique": True}, "unique", "cannot enforce uniqueness"),
        ({"name": "x" * 64}, "name", "1 to 63 bytes"),
        ({"name": "users"}, "name", "public.users exists and is not an index"),
    ],
)
def test_bad_input_names_the_field_and_changes_nothing(
    users: psycopg.Connection, pg_connect: Connector, changes: dict[str, object], field: str, words: str
) -> None:
    users.execute("CREATE TABLE parted (id int) PARTITION BY RANGE (id)")
    fields: dict[str, object] = {"name": "idx_users_email", "table": "users", "columns": ("email",)}
    spec = IndexSpec(**(fields | changes))  # type: ignore[arg-type]

    with pytest.raises(IndexSpecError) as failure:
        build_index(pg_connect, spec, migration_id=MIGRATION, log=LOG, **FAST)

    assert failure.value.field == field
    assert words in str(failure.value)
    assert not _ledger_exists(users)
    assert users.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'users'").fetchone() == (1,)


def test_bad_knobs_are_refused_before_anything_changes(
    users: psycopg.Connection, pg_connect: Connector
) -> None:
    spec = IndexSpec(name="idx_users_email", table="users", columns=("email",))
    for knobs, field in (
        ({"max_rebuilds": -1}, "max_rebuilds"),
        ({"ddl_retries": -1}, "ddl_retries"),
        ({"lock_timeout": timedelta(0)}, "lock_timeout"),
        ({"progress_interval": timedelta(0)}, "progress_interval"),
    ):
        with pytest.raises(IndexSpecError) as failure:
            build_index(pg_connect, spec, migration_id=MIGRATION, log=LOG, **knobs)
        assert failure.value.field == field
    assert not _ledger_exists(users)
