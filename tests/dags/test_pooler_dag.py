"""The example migration through ``dag.test()`` with its connection behind a real PgBouncer in transaction
mode: ``preflight`` refuses at once (no retry), nothing after it runs, and the schema is untouched."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import redis

from tests.dags.harness import copy_migration, install_dag_file, run_dag, seed_bullmq_queue, seed_demo, states


def test_transaction_pooling_fails_the_run_at_preflight_and_changes_nothing(
    tmp_path: Path,
    airflow_home: Path,
    airflow_conn: dict[str, str],
    pg_conn: psycopg.Connection,
    pgbouncer: Callable[..., str],
    redis_prefix: str,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed_demo(pg_conn, 1_000)
    seed_bullmq_queue(redis_client, redis_prefix)
    params = psycopg.conninfo.conninfo_to_dict(pgbouncer("transaction"))
    monkeypatch.setenv(
        "AIRFLOW_CONN_APP_DB",
        json.dumps(
            {
                "conn_type": "postgres",
                "host": params["host"],
                "port": int(str(params["port"])),
                "login": params.get("user") or "postgres",
                "schema": params["dbname"],
            }
        ),
    )
    migration_id = f"products_pooler_{uuid.uuid4().hex[:8]}"
    queues = {"names": ["sync"], "prefix": redis_prefix, "drain_timeout": "30s"}
    folder = copy_migration(tmp_path, migration_id, queues=queues, retries=3)
    dag_file = install_dag_file(airflow_home, folder.parent, migration_id)
    run = run_dag(dag_file, migration_id)
    result = states(run)
    assert str(run.state) == "failed", result
    assert result["preflight"] == "failed", result  # definitive: not up_for_retry despite retries: 3
    assert result["expand"] == "upstream_failed" and result["rollback"] != "success", result
    assert pg_conn.execute("SELECT to_regclass('products_name_idx')").fetchone() == (None,)
    columns = pg_conn.execute(
        "SELECT array_agg(column_name::text ORDER BY column_name) FROM information_schema.columns"
        " WHERE table_name = 'products' AND column_name IN ('name', 'title')"
    ).fetchone()
    assert columns == (["title"],)  # expand never ran
    assert b"paused" not in redis_client.hgetall(f"{redis_prefix}:sync:meta")
