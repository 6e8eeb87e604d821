"""The checker itself: a matrix whose checker never objects proves nothing, so each invariant is broken on
purpose once (a wrong row, a lost row, an invalid index, a paused queue, a stale marker, a phase that
disagrees, a rollback after the contract) and must be reported."""

from __future__ import annotations

import psycopg
import pytest
import redis

from airflow_provider_expand.engine.queues.pause import MARKER_SUFFIX
from tests.dags.harness import Writer, seed_bullmq_queue, seed_demo
from tests.failures.invariants import LEDGER_SCHEMA, check_invariants

ROWS = 200


@pytest.fixture
def seeded(pg_conn: psycopg.Connection, pg_dsn: str) -> Writer:
    shops = seed_demo(pg_conn, ROWS)
    return Writer(pg_dsn, shops, ROWS)  # never started: it expects every row as seeded


def _findings(
    pg_dsn: str, references: dict[str, str], writer: Writer, client: redis.Redis, prefix: str
) -> list[str]:
    return check_invariants(pg_dsn, references, "m", writer, client, prefix).findings


def test_a_clean_pre_migration_database_passes(
    seeded: Writer, pg_dsn: str, references: dict[str, str], redis_client: redis.Redis, redis_prefix: str
) -> None:
    seed_bullmq_queue(redis_client, redis_prefix)
    verdict = check_invariants(pg_dsn, references, "m", seeded, redis_client, redis_prefix)
    assert verdict.ok and verdict.shape == "pre", verdict.summary()


def test_each_broken_invariant_is_reported(
    seeded: Writer,
    pg_dsn: str,
    pg_conn: psycopg.Connection,
    references: dict[str, str],
    redis_client: redis.Redis,
    redis_prefix: str,
) -> None:
    seed_bullmq_queue(redis_client, redis_prefix)
    pg_conn.execute("UPDATE products SET title = 'lost write' WHERE id = 7")
    pg_conn.execute("DELETE FROM products WHERE id = 9")
    redis_client.hset(f"{redis_prefix}:sync:meta", "paused", "1")
    redis_client.set(f"{redis_prefix}:sync:{MARKER_SUFFIX}", "m")
    found = "\n".join(_findings(pg_dsn, references, seeded, redis_client, redis_prefix))
    for expected in ("wrong title", f"{ROWS - 1} products", "sync:meta is paused", f"marker {redis_prefix}"):
        assert expected in found, found


def test_an_invalid_index_and_an_unknown_schema_are_reported(
    seeded: Writer, pg_dsn: str, pg_conn: psycopg.Connection, references: dict[str, str]
) -> None:
    with pytest.raises(psycopg.errors.UniqueViolation):
        pg_conn.execute("CREATE UNIQUE INDEX CONCURRENTLY idx_dup ON products (shop_id)")
    verdict = check_invariants(pg_dsn, references, "m", seeded, None, None)
    # pg_dump leaves invalid indexes out: the schema still reads as pre, so only pg_index tells
    assert verdict.shape == "pre" and verdict.findings == ["invalid index idx_dup"], verdict.summary()
    pg_conn.execute("ALTER TABLE products ADD COLUMN name text")
    verdict = check_invariants(pg_dsn, references, "m", seeded, None, None)
    assert verdict.shape is None and "schema is none of" in verdict.summary(), verdict.summary()


def test_a_phase_that_disagrees_and_a_rollback_after_the_contract_are_reported(
    seeded: Writer, pg_dsn: str, pg_conn: psycopg.Connection, references: dict[str, str]
) -> None:
    pg_conn.execute(f"CREATE SCHEMA {LEDGER_SCHEMA}")
    pg_conn.execute(f"CREATE TABLE {LEDGER_SCHEMA}.migrations (id text PRIMARY KEY, phase text)")
    pg_conn.execute(
        f"CREATE TABLE {LEDGER_SCHEMA}.steps (migration_id text, step text, part int, started_at timestamptz)"
    )
    pg_conn.execute(f"INSERT INTO {LEDGER_SCHEMA}.migrations VALUES ('m', 'completed')")
    pg_conn.execute(
        f"INSERT INTO {LEDGER_SCHEMA}.steps VALUES ('m', 'contract', 0, now() - interval '1 minute'),"
        " ('m', 'rollback', 0, now())"
    )
    found = "\n".join(check_invariants(pg_dsn, references, "m", seeded, None, None).findings)
    assert "ledger phase completed disagrees with the pre schema" in found, found
    assert "rollback started at" in found, found
