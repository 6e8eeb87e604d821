"""The example migration on a real CeleryExecutor: two ``airflow celery worker`` processes, a PostgreSQL
metadata DB, a private Redis broker, the api-server, scheduler, dag-processor and triggerer, all on loopback.

One run with four backfill partitions: they run on both workers at once; one worker is SIGKILLed mid-backfill
(with everything it forked), the scheduler notices its tasks' heartbeats stop, the retries run on the other
worker and resume from the ledger's checkpoints; the run succeeds and every row is right.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from airflow_provider_expand.demo.airflow_home import connection_env
from airflow_provider_expand.demo.servers import with_dbname
from tests.dags.harness import copy_migration, seed_demo
from tests.distributed.hostnames import WORKERS
from tests.distributed.stack import HEARTBEAT_TIMEOUT, CeleryStack, celery_stack

MIGRATION = "products_title_to_name_celery"
ROWS = 24_000
PARTITIONS = 4
STEP = "backfill:products"
TASK = "backfill.products"
# slow enough (small batches, a pause) that the kill lands mid-partition on a busy machine
BACKFILL = {
    "table": "products",
    "set": "name = title, price_cents = round(price * 100)::bigint",
    "where": "name IS NULL OR (price_cents IS NULL AND price IS NOT NULL)",
    "batch_size": 100,
    "target_batch_time": "5ms",
    "pause": "150ms",
    "partitions": PARTITIONS,
}
LEDGER = (
    "SELECT part, status, rows_done, last_key FROM airflow_expand.steps"
    " WHERE migration_id = %s AND step = %s ORDER BY part"
)


@dataclass
class Target:
    dsn: str
    migrations: Path


@pytest.fixture(scope="module")
def target(pg_server_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    name = f"expand_celery_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = with_dbname(pg_server_dsn, name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            seed_demo(conn, ROWS)
        root = tmp_path_factory.mktemp("celery")
        copy_migration(root, MIGRATION, soak="2s", queues=None, retry_delay="1s", backfill=[BACKFILL])
        yield Target(dsn, root / "migrations")
    finally:
        with psycopg.connect(pg_server_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def stack(pg_server_dsn: str, redis_url: str, target: Target) -> Iterator[CeleryStack]:
    with celery_stack(
        pg_server_dsn, target.migrations, connection_env(target.dsn, redis_url), dag_ids=(MIGRATION,)
    ) as running:
        yield running


def _ledger(dsn: str) -> dict[int, tuple[str, int, int | None]]:
    """Each partition's (status, rows_done, last_key) in the target database's ledger."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(LEDGER, (MIGRATION, STEP)).fetchall()
    return {part: (status, int(done or 0), int(key) if key else None) for part, status, done, key in rows}


def _partitions(stack: CeleryStack, run_id: str) -> dict[int, dict[str, Any]]:
    return {
        int(ti["map_index"]): ti for ti in stack.task_instances(MIGRATION, run_id) if ti["task_id"] == TASK
    }


def _wait_for_both_workers(stack: CeleryStack, target: Target, run_id: str) -> dict[int, dict[str, Any]]:
    """Until partitions run on both workers at once, those of worker 2 under way (a checkpoint) but not done."""
    deadline = time.monotonic() + 300
    seen: dict[int, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        stack.check_alive()
        seen = _partitions(stack, run_id)
        running = {p: ti for p, ti in seen.items() if ti["state"] == "running" and ti["hostname"]}
        if {ti["hostname"] for ti in running.values()} == set(WORKERS.values()):
            ledger = _ledger(target.dsn)
            victims = [p for p, ti in running.items() if ti["hostname"] == WORKERS["worker_2"]]
            if all(p in ledger and ledger[p][0] == "running" and ledger[p][1] > 0 for p in victims):
                return running
        assert stack.run_state(MIGRATION, run_id) not in ("success", "failed"), seen
        time.sleep(0.5)
    raise AssertionError(f"the partitions never ran on both workers at once: {seen}\n{stack.logs()}")


def test_partitions_spread_over_workers_and_survive_a_killed_worker(
    stack: CeleryStack, target: Target
) -> None:
    run_id = stack.trigger(MIGRATION)
    running = _wait_for_both_workers(stack, target, run_id)
    victims = sorted(p for p, ti in running.items() if ti["hostname"] == WORKERS["worker_2"])
    assert victims and len(victims) < len(running), running  # both workers had partitions at that moment

    killed_at = stack.kill_worker("worker_2")
    at_kill = _ledger(target.dsn)
    assert all(at_kill[p][0] == "running" and at_kill[p][1] > 0 for p in victims), at_kill
    time.sleep(2)  # far less than the heartbeat timeout: no retry yet, and nothing of the dead worker runs
    assert {p: _ledger(target.dsn)[p] for p in victims} == {p: at_kill[p] for p in victims}

    # Watch the killed partitions' checkpoints until the run ends: they must only ever move forward.
    resumed_at: dict[int, float] = {}
    history: dict[int, list[tuple[int, int | None]]] = {p: [] for p in victims}
    deadline = time.monotonic() + 300
    state = stack.run_state(MIGRATION, run_id)
    while state not in ("success", "failed") and time.monotonic() < deadline:
        ledger = _ledger(target.dsn)
        for part in victims:
            _, done, key = ledger[part]
            history[part].append((done, key))
            if part not in resumed_at and done > at_kill[part][1]:
                resumed_at[part] = time.time()
        time.sleep(0.25)
        state = stack.run_state(MIGRATION, run_id)
    assert state == "success", f"run ended {state}: {_partitions(stack, run_id)}\n{stack.logs()}"

    for part in victims:
        done_then, key_then = at_kill[part][1], at_kill[part][2]
        assert key_then is not None
        # never back to zero: the retry continued after the checkpoint the dead worker had committed
        assert all(done >= done_then and (key or 0) >= key_then for done, key in history[part]), (
            part,
            at_kill[part],
            history[part][:20],
        )
        assert part in resumed_at, f"partition {part} never moved past its checkpoint {at_kill[part]}"
        tries = stack.tries(MIGRATION, run_id, TASK, part)
        assert [t["hostname"] for t in tries][:1] == [WORKERS["worker_2"]], tries
        assert tries[-1]["hostname"] == WORKERS["worker_1"] and tries[-1]["state"] == "success", tries
        assert len(tries) >= 2, tries
        log = str(
            stack.api(
                "GET",
                f"/dags/{MIGRATION}/dagRuns/{run_id}/taskInstances/{TASK}/logs/{tries[-1]['try_number']}",
                params={"map_index": part, "full_content": True},
            )
        )
        # exactly where the dead worker's last committed batch ended
        assert f"resuming after key {key_then} with {done_then:,} rows done" in log, log[-3000:]
    first_tries: set[str] = set()
    for part in range(PARTITIONS):
        tries = stack.tries(MIGRATION, run_id, TASK, part)
        first_tries.add(tries[0]["hostname"])
        assert tries[-1]["state"] == "success", tries
        if part not in victims:  # ran once, where it started
            assert len(tries) == 1, tries
    assert first_tries == set(WORKERS.values()), first_tries

    # Every row right, each done exactly once (a batch and its checkpoint commit together).
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        wrong = conn.execute(
            "SELECT count(*) FROM products WHERE name IS DISTINCT FROM 'Product ' || id"
            " OR price_cents IS DISTINCT FROM round(price * 100)::bigint"
        ).fetchone()
        total = conn.execute("SELECT count(*) FROM products").fetchone()
        phase = conn.execute(
            "SELECT phase FROM airflow_expand.migrations WHERE id = %s", (MIGRATION,)
        ).fetchone()
    assert wrong == (0,) and total == (ROWS,) and phase == ("completed",)
    final = _ledger(target.dsn)
    assert all(status == "success" for status, _, _ in final.values()), final
    assert sum(done for _, done, _ in final.values()) == ROWS, final

    gaps = {p: round(resumed_at[p] - killed_at, 1) for p in victims}
    print(
        f"\nkilled worker_2 with partitions {victims} (checkpoints {at_kill}); resumed on worker_1 after "
        f"{gaps} s (heartbeat timeout {HEARTBEAT_TIMEOUT} s)"
    )
