"""``kill -9`` of the worker mid-backfill, then the next try: it resumes from the ledger's checkpoint."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg
import pytest

from airflow_provider_expand.engine.backfill.run import BackfillSpec, run_backfill
from airflow_provider_expand.engine.database import Connector
from airflow_provider_expand.engine.ledger.store import Ledger

LOG = logging.getLogger("test.backfill")
WHERE = "name IS NULL AND title IS NOT NULL"
WORKER = textwrap.dedent(
    """
    import datetime as dt, logging, sys
    from airflow_provider_expand.engine.backfill.run import BackfillSpec, run_backfill
    from airflow_provider_expand.engine.database import connector_from_dsn

    logging.basicConfig(level=logging.INFO)
    spec = BackfillSpec(table="products", set="name = title", where=sys.argv[2], batch_size=500,
                        target_batch_time=None, pause=dt.timedelta(milliseconds=20))
    run_backfill(connector_from_dsn(sys.argv[1], application_name="doomed-worker"), spec,
                 migration_id="m", log=logging.getLogger("worker"))
    """
)


def _count(conn: psycopg.Connection, query: str, *params: object) -> int:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def _wait(condition: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.one_pg_version("kill -9 of a worker, then the resume from the ledger")
def test_kill_9_mid_run_then_resume_from_the_checkpoint(
    pg_conn: psycopg.Connection, pg_dsn: str, pg_connect: Connector, tmp_path: Path
) -> None:
    rows = 100_000
    pg_conn.execute("CREATE TABLE products (id bigint PRIMARY KEY, title text, name text)")
    pg_conn.execute(
        "INSERT INTO products SELECT g, CASE WHEN g %% 50 = 0 THEN NULL ELSE 'title ' || g END"
        " FROM generate_series(1, %s) g",
        (rows,),
    )
    to_do = rows - rows // 50
    ledger = Ledger()
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    worker = subprocess.Popen(
        [sys.executable, str(script), pg_dsn, WHERE], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:

        def progressed() -> bool:
            assert worker.poll() is None, worker.stderr.read() if worker.stderr else worker.returncode
            if _count(pg_conn, "SELECT (to_regclass('airflow_expand.steps') IS NOT NULL)::int") == 0:
                return False
            step = ledger.step(pg_conn, "m", "backfill:products")
            return step is not None and step.rows_done >= 5_000

        _wait(progressed, "the worker's checkpoint to show progress")
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)
    assert worker.returncode == -signal.SIGKILL
    _wait(
        lambda: (
            _count(pg_conn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'doomed-worker'")
            == 0
        ),
        "the killed worker's server process to go",
    )

    killed = ledger.step(pg_conn, "m", "backfill:products")
    assert killed is not None and killed.status == "running" and killed.last_key is not None
    last = int(killed.last_key)
    # The checkpoint and the data agree: every row up to last_key is done, none after it, and rows_done
    # counts exactly the rows written (the batch in flight at the kill was rolled back as a whole).
    assert 5_000 <= killed.rows_done < to_do
    assert _count(pg_conn, "SELECT count(*) FROM products WHERE name IS NOT NULL") == killed.rows_done
    assert _count(pg_conn, f"SELECT count(*) FROM products WHERE id <= %s AND {WHERE}", last) == 0
    assert _count(pg_conn, "SELECT count(*) FROM products WHERE id > %s AND name IS NOT NULL", last) == 0

    spec = BackfillSpec(table="products", set="name = title", where=WHERE, batch_size=5_000)
    result = run_backfill(pg_connect, spec, migration_id="m", log=LOG)
    assert result.resumed_from == killed.last_key
    assert result.rows_this_run == to_do - killed.rows_done
    assert result.rows_done == to_do
    assert _count(pg_conn, "SELECT count(*) FROM products WHERE name IS DISTINCT FROM title") == 0
    final = ledger.step(pg_conn, "m", "backfill:products")
    assert final is not None and final.status == "success" and final.rows_done == to_do
