"""The example migration end to end through ``dag.test()``: real PostgreSQL, Redis and Airflow, with the
application writing throughout. Then the same with a failure after expand, which must roll back."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest
import redis
import yaml

from airflow_provider_expand.engine.backup.pg_tools import PgTarget, client_env, resolve_tool
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

ROWS = 20_000


def _schema_dump(dsn: str) -> str:
    target = PgTarget.from_dsn(dsn)
    major = int(psycopg.connect(dsn).info.server_version) // 10000
    pg_dump = resolve_tool("pg_dump", server_major=major)
    with client_env(target) as env:
        out = subprocess.run(
            [str(pg_dump), "--schema-only", "--no-owner", "--exclude-schema=airflow_expand"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    # comments and the random key of pg_dump's \restrict guard differ between two dumps of one schema
    return "\n".join(
        line for line in out.splitlines() if not line.startswith(("--", "\\restrict", "\\unrestrict"))
    )


@pytest.fixture
def setup(
    tmp_path: Path,
    airflow_home: Path,
    airflow_conn: dict[str, str],
    pg_conn: psycopg.Connection,
    redis_prefix: str,
    redis_client: redis.Redis,
) -> dict[str, object]:
    shops = seed_demo(pg_conn, ROWS)
    seed_bullmq_queue(redis_client, redis_prefix)
    migration_id = f"products_e2e_{uuid.uuid4().hex[:8]}"
    return {"shops": shops, "id": migration_id, "tmp": tmp_path, "home": airflow_home, "prefix": redis_prefix}


def _queues(prefix: str) -> dict[str, object]:
    return {"names": ["sync"], "prefix": prefix, "drain_timeout": "30s"}


def test_example_migration_runs_to_completion_while_the_app_writes(
    setup: dict[str, object], pg_dsn: str, pg_conn: psycopg.Connection, redis_client: redis.Redis
) -> None:
    migration_id = str(setup["id"])
    tmp = Path(str(setup["tmp"]))
    folder = copy_migration(
        tmp,
        migration_id,
        soak="3s",
        queues=_queues(str(setup["prefix"])),
        backup={
            "directory": str(tmp / "backups"),
            "take": True,
            "max_age": "1h",
            "must_contain": ["products"],
        },
    )
    (tmp / "backups").mkdir()
    dag_file = install_dag_file(Path(str(setup["home"])), folder.parent, migration_id)
    writer = Writer(pg_dsn, list(setup["shops"]), ROWS).start()  # type: ignore[arg-type]
    try:
        run = run_dag(dag_file, migration_id)
    finally:
        writer.stop()
    result = states(run)
    assert str(run.state) == "success", result
    assert result["contract"] == "success" and result["rollback"] == "skipped", result
    assert writer.statements > 50 and not writer.errors, writer.errors[:3]

    columns = {
        r[0]
        for r in pg_conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'products'"
        )
    }
    assert "title" not in columns and {"name", "price_cents"} <= columns
    nullable = pg_conn.execute(
        "SELECT is_nullable FROM information_schema.columns WHERE table_name = 'products' AND column_name = 'name'"
    ).fetchone()
    assert nullable == ("NO",)
    names = dict(pg_conn.execute("SELECT id, name FROM products").fetchall())
    for product_id, name in names.items():
        assert name == writer.expected.get(product_id, f"Product {product_id}"), product_id
    assert pg_conn.execute(
        "SELECT count(*) FROM products WHERE price_cents IS NULL AND price IS NOT NULL"
    ).fetchone() == (0,)
    valid = pg_conn.execute(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 'idx_products_name'::regclass"
    ).fetchone()
    assert valid == (True,)
    record = Ledger().get(pg_conn, migration_id)
    assert record is not None and record.phase == "completed" and record.contracted_at is not None
    assert record.soaked_at is not None and record.backfilled_at is not None
    meta = redis_client.hgetall(f"{setup['prefix']}:sync:meta")
    assert b"paused" not in meta, meta
    assert redis_client.llen(f"{setup['prefix']}:sync:wait") == 3  # resumed: the jobs wait for workers again
    assert list((tmp / "backups").glob("pre_migration_*.dump"))

    again = run_dag(dag_file, migration_id)
    again_states = states(again)
    assert str(again.state) == "success", again_states
    assert again_states["begin"] == "skipped" and again_states["expand"] == "skipped", again_states


def test_failure_after_expand_rolls_back_to_the_same_schema(
    setup: dict[str, object], pg_dsn: str, pg_conn: psycopg.Connection, redis_client: redis.Redis
) -> None:
    migration_id = str(setup["id"])
    tmp = Path(str(setup["tmp"]))
    failing_check = {"name": "injected failure", "sql": "SELECT 1", "expect": 2, "after": "expand"}
    folder = copy_migration(
        tmp, migration_id, soak="3s", queues=_queues(str(setup["prefix"])), verify=[failing_check]
    )
    before = _schema_dump(pg_dsn)
    dag_file = install_dag_file(Path(str(setup["home"])), folder.parent, migration_id)
    run = run_dag(dag_file, migration_id)
    result = states(run)
    assert str(run.state) == "failed", result
    assert result["expand"] == "success" and result["verify_expand"] == "failed", result
    assert result["rollback"] == "success" and result["contract"] == "upstream_failed", result
    assert result["queues.resume"] == "success", result
    assert _schema_dump(pg_dsn) == before
    record = Ledger().get(pg_conn, migration_id)
    assert record is not None and record.phase == "rolled_back" and record.rolled_back_at is not None
    assert b"paused" not in redis_client.hgetall(f"{setup['prefix']}:sync:meta")


def test_rerun_after_rollback_starts_over_and_completes(
    setup: dict[str, object], pg_dsn: str, pg_conn: psycopg.Connection
) -> None:
    migration_id = str(setup["id"])
    tmp = Path(str(setup["tmp"]))
    failing = {"name": "injected failure", "sql": "SELECT 1", "expect": 2, "after": "expand"}
    folder = copy_migration(tmp, migration_id, soak="2s", queues=None, verify=[failing])
    dag_file = install_dag_file(Path(str(setup["home"])), folder.parent, migration_id)
    assert str(run_dag(dag_file, migration_id).state) == "failed"
    record = Ledger().get(pg_conn, migration_id)
    assert record is not None and record.phase == "rolled_back"

    spec = yaml.safe_load((folder / "migration.yaml").read_text())
    spec["verify"] = [
        {
            "name": "every product has a name",
            "sql": "SELECT count(*) FROM products WHERE name IS NULL",
            "expect": 0,
        }
    ]
    (folder / "migration.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    run = run_dag(dag_file, migration_id)
    assert str(run.state) == "success", states(run)
    record = Ledger().get(pg_conn, migration_id)
    assert record is not None and record.phase == "completed" and record.rolled_back_at is not None
    assert pg_conn.execute("SELECT count(*) FROM products WHERE name IS NULL").fetchone() == (0,)


def test_dry_run_changes_nothing(
    setup: dict[str, object], pg_dsn: str, pg_conn: psycopg.Connection, redis_client: redis.Redis
) -> None:
    migration_id = str(setup["id"])
    tmp = Path(str(setup["tmp"]))
    folder = copy_migration(tmp, migration_id, queues=_queues(str(setup["prefix"])))  # the spec's 24 h soak
    before = _schema_dump(pg_dsn)
    dag_file = install_dag_file(Path(str(setup["home"])), folder.parent, migration_id)
    run = run_dag(dag_file, migration_id, {"dry_run": True})
    assert str(run.state) == "success", states(run)
    assert _schema_dump(pg_dsn) == before
    assert pg_conn.execute("SELECT to_regclass('airflow_expand.migrations')").fetchone() == (None,)
    assert pg_conn.execute("SELECT count(*) FROM products WHERE title LIKE 'Product %%'").fetchone() == (
        ROWS,
    )
    assert redis_client.llen(f"{setup['prefix']}:sync:wait") == 3
    assert b"paused" not in redis_client.hgetall(f"{setup['prefix']}:sync:meta")


def test_a_param_out_of_range_is_refused_before_anything_runs(
    setup: dict[str, object], pg_conn: psycopg.Connection
) -> None:
    migration_id = str(setup["id"])
    folder = copy_migration(Path(str(setup["tmp"])), migration_id, queues=None)
    dag_file = install_dag_file(Path(str(setup["home"])), folder.parent, migration_id)
    with pytest.raises(Exception, match="batch_size"):
        run_dag(dag_file, migration_id, {"batch_size": 0})
    assert pg_conn.execute("SELECT to_regclass('airflow_expand.migrations')").fetchone() == (None,)
