"""The backfill on a real CeleryExecutor: rows/s with 1 worker vs 2, and how long a killed worker's partition
waits before it resumes on the other worker.

Run by hand (not by pytest), against a PostgreSQL you may create databases on (it also starts a private
redis-server, the api-server, scheduler, dag-processor, triggerer and the workers, as tests/distributed does)::

    .venv/bin/python benchmarks/celery_backfill.py --dsn postgresql://postgres@127.0.0.1:5432/postgres

For each scenario it seeds a fresh database with ``--rows`` products, starts the stack, triggers the example
migration with ``--partitions`` backfill partitions (spec pacing defaults: batch 10,000, target 100 ms,
pause 100 ms) and reads the ledger afterwards: rows/s = rows backfilled / (last partition's end - first
partition's start). The kill scenario SIGKILLs worker 2 (and what it forked) once its partitions have
checkpoints, and reports the seconds from the kill to the first batch the retry commits.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="expand-bench-home-"))

from airflow_provider_expand.demo.airflow_home import connection_env  # noqa: E402
from airflow_provider_expand.demo.servers import with_dbname  # noqa: E402
from tests.dags.harness import copy_migration, seed_demo  # noqa: E402
from tests.distributed.hostnames import WORKERS  # noqa: E402
from tests.distributed.stack import HEARTBEAT_TIMEOUT, celery_stack  # noqa: E402

MIGRATION = "products_title_to_name_bench"
STEP = "backfill:products"
TASK = "backfill.products"


def _scenario(args: argparse.Namespace, workers: int, kill: bool) -> dict[str, float]:
    name = f"expand_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(args.dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = with_dbname(args.dsn, name)
    root = Path(tempfile.mkdtemp(prefix="expand-bench-"))
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            seed_demo(conn, args.rows)
        fill = {
            "table": "products",
            "set": "name = title, price_cents = round(price * 100)::bigint",
            "where": "name IS NULL OR (price_cents IS NULL AND price IS NOT NULL)",
            "partitions": args.partitions,
        }
        copy_migration(root, MIGRATION, soak="1s", queues=None, retry_delay="1s", backfill=[fill])
        with celery_stack(
            args.dsn,
            root / "migrations",
            connection_env(dsn, os.environ.get("EXPAND_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")),
            workers=workers,
            concurrency=args.concurrency,
            dag_ids=(MIGRATION,),
        ) as stack:
            run_id = stack.trigger(MIGRATION)
            result: dict[str, float] = {}
            if kill:
                result["resume_s"] = _kill_and_time(stack, dsn, run_id)
            state = stack.wait_for_run(MIGRATION, run_id, timeout=1800)
            if state != "success":
                raise RuntimeError(f"run ended {state}\n{stack.logs()}")
        with psycopg.connect(dsn) as conn:
            row = conn.execute(
                "SELECT sum(rows_done), extract(epoch FROM max(finished_at) - min(started_at))"
                " FROM airflow_expand.steps WHERE migration_id = %s AND step = %s",
                (MIGRATION, STEP),
            ).fetchone()
        assert row is not None
        rows, seconds = int(row[0]), float(row[1])
        result.update(rows=rows, seconds=seconds, rows_per_s=rows / seconds)
        return result
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _rows_done(dsn: str) -> dict[int, int]:
    """Each backfill partition's checkpoint (rows done); empty until the ledger exists."""
    query = "SELECT part, rows_done FROM airflow_expand.steps WHERE migration_id = %s AND step = %s"
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            return {int(p): int(r or 0) for p, r in conn.execute(query, (MIGRATION, STEP)).fetchall()}
        except psycopg.errors.UndefinedTable:
            return {}


def _kill_and_time(stack: object, dsn: str, run_id: str) -> float:
    """Kill worker 2 once its partitions have checkpoints; seconds until one of them commits again."""
    from tests.distributed.stack import CeleryStack

    assert isinstance(stack, CeleryStack)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        tis = [ti for ti in stack.task_instances(MIGRATION, run_id) if ti["task_id"] == TASK]
        victims = {
            int(ti["map_index"])
            for ti in tis
            if ti["state"] == "running" and ti["hostname"] == WORKERS["worker_2"]
        }
        done = _rows_done(dsn)
        if victims and all(done.get(p, 0) > 0 for p in victims):
            break
        time.sleep(0.3)
    else:
        raise RuntimeError("worker 2 never ran a partition")
    killed = stack.kill_worker("worker_2")
    at_kill = _rows_done(dsn)
    while time.monotonic() < deadline:
        now = _rows_done(dsn)
        if any(now[p] > at_kill[p] for p in victims):
            return time.time() - killed
        time.sleep(0.2)
    raise RuntimeError("the killed partitions never resumed")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dsn", default=os.environ.get("EXPAND_TEST_PG_DSN", "postgresql://postgres@127.0.0.1/postgres")
    )
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=2, help="task slots per worker")
    parser.add_argument("--scenarios", default="one,two,kill", help="which of one,two,kill to run")
    args = parser.parse_args()
    print(
        f"{args.rows:,} rows, {args.partitions} partitions, {args.concurrency} slots per worker, "
        f"heartbeat timeout {HEARTBEAT_TIMEOUT} s, retry_delay 1 s\n"
    )
    print("| scenario | backfill wall time | rows/s | death -> resumed |")
    print("|---|---|---|---|", flush=True)
    wanted = set(args.scenarios.split(","))
    results: dict[str, dict[str, float]] = {}
    for label, workers, kill in (("one", 1, False), ("two", 2, False), ("kill", 2, True)):
        if label not in wanted:
            continue
        result = results[label] = _scenario(args, workers=workers, kill=kill)
        name = {"one": "1 worker", "two": "2 workers", "kill": "2 workers, worker 2 SIGKILLed"}[label]
        resume = f"{result['resume_s']:.1f} s" if kill else ""
        print(f"| {name} | {result['seconds']:.1f} s | {result['rows_per_s']:,.0f} | {resume} |", flush=True)
    if {"one", "two"} <= set(results):
        print(f"\n2 workers / 1 worker: {results['two']['rows_per_s'] / results['one']['rows_per_s']:.2f}x")


if __name__ == "__main__":
    main()
