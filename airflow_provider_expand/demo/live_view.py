"""The demo's live view (rich): each task's state from Airflow's metadata DB, the backfill's progress bars
and the soak's countdown from the ledger (the same overview the UI's migration view shows), redrawn while
``dag.test()`` runs. Airflow's and the tasks' own log lines go to a file instead (:func:`logs_to_file`)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import psycopg
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from airflow_provider_expand.engine.ledger.overview import migration_overview
from airflow_provider_expand.engine.ledger.store import Ledger

_COLORS = {
    "success": "green",
    "failed": "red",
    "upstream_failed": "red",
    "running": "yellow",
    "deferred": "cyan",
    "up_for_retry": "magenta",
    "skipped": "dim",
}


@contextlib.contextmanager
def logs_to_file(path: Path) -> Iterator[TextIO]:
    """Send everything written to this process's stdout and stderr (Airflow, the tasks, any child) to
    ``path``; yields a stream on the real terminal for the live view."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved[0]), "w", buffering=1)
    with path.open("ab") as log_file:
        os.dup2(log_file.fileno(), 1)
        os.dup2(log_file.fileno(), 2)
        try:
            yield terminal
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            terminal.flush()


def terminal_console(stream: TextIO | None = None) -> Console:
    """A console on ``stream``; wide enough that tables do not wrap when it is not a terminal."""
    stream = stream or sys.stdout
    return Console(file=stream, width=None if stream.isatty() else 110)


def task_states(dag_id: str) -> tuple[str | None, dict[str, str]]:
    """The latest run of ``dag_id`` and its task instances' states (``task[map_index]`` for mapped ones)."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalars(
            select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.id.desc()).limit(1)
        ).first()
        if run is None:
            return None, {}
        tis = session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run.run_id)
        ).all()
        states = {
            (ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"): str(ti.state or "none")
            for ti in tis
        }
        return run.run_id, states


class LiveView:
    """Redraws the migration's state every half second in a thread while the run goes on."""

    def __init__(self, console: Console, dsn: str, migration_id: str, soak: dt.timedelta | None) -> None:
        self.console = console
        self.dsn = dsn
        self.migration_id = migration_id
        self.soak = soak
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: Live | None = None

    def _migration(self) -> dict[str, Any] | None:
        ledger = Ledger()
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
            if not ledger.installed(conn):
                return None
            record = ledger.get(conn, self.migration_id)
            if record is None:
                return None
            return migration_overview(record, ledger.steps(conn, record.id), soak=self.soak)

    def render(self) -> RenderableType:
        try:
            run_id, states = task_states(self.migration_id)
        except Exception as exc:  # SQLite busy while a task writes: show it, try again next time
            run_id, states = None, {"(metadata DB busy)": type(exc).__name__}
        try:
            migration = self._migration()
        except psycopg.Error:
            migration = None
        tasks = Table(show_header=False)
        tasks.add_column("task")
        tasks.add_column("state")
        for task, state in states.items():
            tasks.add_row(task, Text(state, _COLORS.get(state, "")))
        parts: list[RenderableType] = [Text(f"{self.migration_id}  {run_id or ''}", "bold"), tasks]
        if migration is not None:
            parts.append(Text(f"ledger phase: {migration['phase']}", "bold"))
            for p in migration["backfill"]:
                rate = f"{p['rows_per_second']:,.0f} rows/s" if p["rows_per_second"] else "- rows/s"
                eta = f"ETA {p['eta_seconds']:.0f} s" if p["eta_seconds"] is not None else p["status"]
                row = Table.grid(padding=(0, 1))
                row.add_row(
                    f"backfill {p['table']}[{p['partition']}]",
                    ProgressBar(total=100, completed=p["percent"], width=40),
                    f"{p['rows_done']:,} / {p['rows_total'] or 0:,} rows  {rate}  {eta}",
                )
                parts.append(row)
            soak = migration["soak"]
            if soak is not None and soak["remaining_seconds"] is not None:
                parts.append(Text(f"soak: {soak['remaining_seconds']:.0f} s left ({soak['state']})", "cyan"))
            elif soak is not None:
                parts.append(Text(f"soak: {soak['state']}", "cyan"))
        return Group(*parts)

    def __enter__(self) -> LiveView:
        # not redirecting sys.stdout/stderr: they go to the log file (logs_to_file), not above the view
        self._live = Live(
            self.render(),
            console=self.console,
            refresh_per_second=4,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._live.__enter__()
        self._thread = threading.Thread(target=self._loop, name="expand-demo-live-view", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            if self._live is not None:
                self._live.update(self.render())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._live is not None:
            self._live.update(self.render())
            self._live.__exit__(None, None, None)
