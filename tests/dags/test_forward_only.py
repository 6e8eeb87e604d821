"""A half-applied contract through ``dag.test()``: the migration is forward-only from then on.

The first release lost data here: a re-run ran expand again, the backfill failed on the dropped source
column, and ``rollback.sql`` dropped ``name``, the only copy left. Now the re-run's steps before the
contract succeed without doing anything, the contract resumes from its checkpoint, and ``rollback.sql``
never runs; with the contract file fixed, the re-run completes.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import redis

from airflow_provider_expand.engine.ledger.store import Ledger
from tests.dags.harness import (
    Writer,
    copy_migration,
    install_dag_file,
    run_dag,
    seed_bullmq_queue,
    seed_demo,
    states,
)

ROWS = 5_000
_BEFORE_CONTRACT = ("expand", "verify_expand", "backfill.products", "index.idx_products_name", "soak")


def _columns(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'products'")
    return {r[0] for r in rows}


def test_a_half_applied_contract_is_resumed_never_rolled_back(
    tmp_path: Path,
    airflow_home: Path,
    airflow_conn: dict[str, str],
    pg_dsn: str,
    pg_conn: psycopg.Connection,
    redis_prefix: str,
    redis_client: redis.Redis,
) -> None:
    shops = seed_demo(pg_conn, ROWS)
    seed_bullmq_queue(redis_client, redis_prefix)
    migration_id = f"half_contract_{uuid.uuid4().hex[:8]}"
    queues = {"names": ["sync"], "prefix": redis_prefix, "drain_timeout": "30s"}
    folder = copy_migration(tmp_path, migration_id, soak="1s", queues=queues, retries=0)
    contract = folder / "contract.sql"
    good_contract = contract.read_text()
    # the DROP COLUMN group commits, then a CONCURRENTLY statement of its own fails
    contract.write_text(good_contract + "\nDROP INDEX CONCURRENTLY idx_products_missing;\n")
    dag_file = install_dag_file(airflow_home, folder.parent, migration_id)
    writer = Writer(pg_dsn, shops, ROWS).start()
    try:
        first = run_dag(dag_file, migration_id)
        first_states = states(first)
        assert str(first.state) == "failed", first_states
        assert first_states["contract"] == "failed" and first_states["rollback"] == "skipped", first_states
        assert "title" not in _columns(pg_conn)  # the first group committed: half-applied
        record = Ledger().get(pg_conn, migration_id)
        assert record is not None and record.phase == "contracting" and record.contract_started_at
        step = Ledger().step(pg_conn, migration_id, "contract")
        assert (
            step is not None and step.status == "failed" and step.last_key and step.last_key.startswith("1:")
        )

        # a re-run with the file still broken: every step before the contract succeeds doing nothing
        second = run_dag(dag_file, migration_id)
        second_states = states(second)
        assert str(second.state) == "failed", second_states
        for task in _BEFORE_CONTRACT:
            assert second_states[task] == "success", (task, second_states)
        assert second_states["contract"] == "failed" and second_states["rollback"] == "skipped", second_states

        contract.write_text(good_contract)  # the fix: the failing statement removed
        third = run_dag(dag_file, migration_id)
        third_states = states(third)
        assert str(third.state) == "success", third_states
    finally:
        writer.stop()
    assert not writer.errors, writer.errors[:3]
    columns = _columns(pg_conn)
    assert "title" not in columns and {"name", "price_cents"} <= columns
    names = dict(pg_conn.execute("SELECT id, name FROM products").fetchall())
    assert len(names) >= ROWS
    for product_id, name in names.items():
        assert name == writer.expected.get(product_id, f"Product {product_id}"), product_id
    record = Ledger().get(pg_conn, migration_id)
    assert record is not None and record.phase == "completed" and record.rolled_back_at is None
    assert Ledger().step(pg_conn, migration_id, "rollback") is None  # rollback.sql never ran
    assert b"paused" not in redis_client.hgetall(f"{redis_prefix}:sync:meta")
