"""``make demo``: seed the shop, run the example migration end to end in Airflow, print the summary.

The run goes through ``dag.test()``: every task runs in this process; the terminal shows a live view of
it (tasks, backfill progress, soak countdown) while the full logs go to a file. ``make ui`` runs the same DAG in a real Airflow.
Every run re-seeds: the demo database is dropped and created again, the queue re-created.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

import psycopg
import redis

from airflow_provider_expand.demo.airflow_home import (
    MIGRATION_ID,
    airflow_env,
    connection_env,
    install_migration,
    migrate_metadata_db,
    write_passwords,
)
from airflow_provider_expand.demo.live_view import LiveView, logs_to_file, terminal_console
from airflow_provider_expand.demo.servers import Servers, recreate_database
from airflow_provider_expand.demo.shop import AppWriter, seed_queue, seed_shop
from airflow_provider_expand.demo.summary import ledger_summary
from airflow_provider_expand.spec import load_migration

# a backfill's closing progress line (engine/backfill/progress.py), kept on screen after the run
_DONE = re.compile(r"backfill:\S+: done, [^[]*")


def seed(servers: Servers, repo: Path, rows: int, log: logging.Logger) -> None:
    """A fresh demo database and queue: the same starting point on every run."""
    dsn = recreate_database(servers.server_dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        seed_shop(conn, repo / "tests" / "fixtures" / "demo_schema.sql", rows, log)
    client = redis.Redis.from_url(servers.redis_url)
    try:
        seed_queue(client, jobs=25, log=log)
    finally:
        client.close()


def prepare_airflow(
    servers: Servers, repo: Path, state: Path, *, soak: str, port: int = 8080
) -> dict[str, str]:
    """Point this process (and its children) at the demo's Airflow home; returns the variables set."""
    home = state / "airflow"
    dags = install_migration(repo / "dags" / "migrations" / MIGRATION_ID, state, soak=soak)
    write_passwords(home)
    env = {**airflow_env(home, dags, port=port), **connection_env(servers.dsn, servers.redis_url)}
    os.environ.update(env)
    migrate_metadata_db(env)
    return env


def _highlights(log_file: Path) -> list[str]:
    """The tasks' own closing lines worth keeping on screen (each backfill's "done" line)."""
    found = []
    for line in log_file.read_text(errors="replace").splitlines():
        match = _DONE.search(line)
        if match:
            found.append(match.group(0).strip())
    return list(dict.fromkeys(found))


def run_migration(servers: Servers, dags: Path, rows: int, log: logging.Logger) -> bool:
    """Trigger the migration as the UI would (no logical date) while the app writes; True if it succeeded.

    The terminal shows the live view (tasks, backfill bars, soak countdown); every log line goes to
    ``<state>/demo.log``, named at the end.
    """
    # the in-process execution API and the task runner's bookkeeping would drown the tasks' own lines
    os.environ.setdefault(
        "AIRFLOW__LOGGING__NAMESPACE_LEVELS",
        "airflow.api_fastapi=WARNING task=WARNING airflow.models.dagbag=WARNING",
    )
    from airflow.dag_processing.dagbag import (
        DagBag,  # after prepare_airflow: Airflow reads its config on import
    )

    log_file = dags.parent / "demo.log"
    log_file.write_text("")
    soak = load_migration(dags.parent / "migrations" / MIGRATION_ID).soak
    log.info("running %s; its full logs go to %s", MIGRATION_ID, log_file)
    writer = AppWriter(servers.dsn, rows).start()
    started = time.perf_counter()
    try:
        with logs_to_file(log_file) as terminal:
            console = terminal_console(terminal)
            bag = DagBag(dag_folder=str(dags))
            if bag.import_errors:
                raise RuntimeError(f"the demo DAG does not load: {bag.import_errors}")
            dag = bag.get_dag(MIGRATION_ID)
            if dag is None:
                raise RuntimeError(f"DAG {MIGRATION_ID!r} not found in {dags}")
            with LiveView(console, servers.dsn, MIGRATION_ID, soak):
                dag_run = dag.test(logical_date=None)
    finally:
        writer.stop()
    elapsed = time.perf_counter() - started
    console = terminal_console()
    with psycopg.connect(servers.dsn, autocommit=True) as conn:
        summary = ledger_summary(conn, MIGRATION_ID)
    console.print()
    console.rule()
    color = "green" if str(dag_run.state) == "success" else "red"
    console.print(f"DAG run {dag_run.run_id}: [{color}]{dag_run.state}[/] in {elapsed:.0f} s")
    for line in _highlights(log_file):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.print(summary)
    console.print(
        f"the app meanwhile: {writer.statements} updates, {writer.errors} errors, "
        f"slowest {writer.slowest * 1000:.0f} ms"
    )
    console.print(f"full logs (Airflow, every task): {log_file}", markup=False, highlight=False)
    console.rule()
    console.print(
        "Next: `make ui` serves this migration in the Airflow UI, to trigger it from its params form."
    )
    return str(dag_run.state) == "success"
