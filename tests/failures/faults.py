"""Faults injected from outside the product while a DAG runs: every connection to the target database cut
once mid-step (what a failover or a pooler restart does), a task's process SIGKILLed mid-step (a lost
worker), and an old snapshot that holds an index build.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

TERMINATOR_APP = "expand-test-terminator"

# When each step is "mid-step": the condition the terminator polls, on the target database.
# ``%(id)s`` is the migration id. The DDL steps are found by the application_name the runner sets.
MID_STEP: dict[str, str] = {
    "expand": "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
    " AND state = 'active' AND application_name = 'airflow-expand:' || %(id)s || ':expand'"
    " AND query ILIKE '%%pg_sleep%%')",
    "contract": "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
    " AND state = 'active' AND application_name = 'airflow-expand:' || %(id)s || ':contract'"
    " AND query ILIKE '%%pg_sleep%%')",
    "rollback": "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
    " AND state = 'active' AND application_name = 'airflow-expand:' || %(id)s || ':rollback'"
    " AND query ILIKE '%%pg_sleep%%')",
    # a checkpoint committed and rows left: something to resume from
    "backfill": "SELECT EXISTS (SELECT 1 FROM airflow_expand.steps WHERE migration_id = %(id)s"
    " AND step = 'backfill:products' AND status = 'running' AND rows_done > 0"
    " AND (rows_total IS NULL OR rows_done < rows_total))",
    # the build is waiting for the old snapshot the test holds
    "index": "SELECT EXISTS (SELECT 1 FROM pg_stat_progress_create_index p"
    " JOIN pg_database d ON d.oid = p.datid WHERE d.datname = current_database())",
    # a verify check that runs long (a `pg_sleep` in its SQL)
    "verify": "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
    " AND state = 'active' AND pid <> pg_backend_pid() AND query ILIKE '%%pg_sleep%%'"
    " AND application_name NOT LIKE 'airflow-expand:%%')",
    # the soak deferred (its own ledger reads done): only the app is connected
    "soak": "SELECT EXISTS (SELECT 1 FROM airflow_expand.migrations WHERE id = %(id)s AND phase = 'soaking'"
    " AND updated_at < now() - interval '1 second')",
}


def sleep_after_first_statement(text: str) -> str:
    """A SQL file with ``SELECT pg_sleep(2)`` as its second statement: the step stays busy in its
    transaction group long enough for a fault to land inside it."""
    head, sep, rest = text.partition(";\n")
    return head + sep + "SELECT pg_sleep(2);\n" + rest


@dataclass
class Terminator:
    """Waits until ``condition`` holds on the database, then terminates every other backend of it, once."""

    dsn: str
    condition: str
    params: dict[str, Any]
    timeout: float = 300.0
    fired_at: float | None = None
    terminated: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Terminator:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def describe(self) -> str:
        if self.fired_at is None:
            return "never fired" + (f" ({self.errors[-1][:80]})" if self.errors else "")
        apps = sorted({a or "no application_name" for a in self.terminated})
        return f"terminated {len(self.terminated)} backends ({', '.join(apps)})"

    def _run(self) -> None:
        deadline = time.monotonic() + self.timeout
        with psycopg.connect(self.dsn, autocommit=True, application_name=TERMINATOR_APP) as conn:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    row = conn.execute(self.condition, self.params).fetchone()
                except psycopg.errors.UndefinedTable:  # no ledger yet
                    row = None
                except psycopg.Error as exc:
                    self.errors.append(str(exc))
                    row = None
                if row and row[0]:
                    rows = conn.execute(
                        "SELECT application_name, pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    ).fetchall()
                    self.terminated = [str(r[0]) for r in rows if r[1]]
                    self.fired_at = time.monotonic()
                    return
                time.sleep(0.02)


class SnapshotHolder:
    """An idle transaction with a snapshot (on ``shops``, never on the migrated table): a
    ``CREATE INDEX CONCURRENTLY`` waits for it in its "waiting for old snapshots" phase."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, application_name="expand-test-snapshot")
        self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        self.conn.execute("SELECT count(*) FROM shops").fetchone()

    def close(self) -> None:
        if self.conn.closed:
            return
        with suppress(psycopg.Error):  # terminated by the fault, as intended
            self.conn.rollback()
        self.conn.close()


class SqlProbe:
    """``condition`` (one of :data:`MID_STEP`) polled on the target database, as a Killer's ``ready``."""

    def __init__(self, dsn: str, condition: str, params: dict[str, Any]) -> None:
        self.dsn, self.condition, self.params = dsn, condition, params
        self.conn: psycopg.Connection | None = None

    def __call__(self) -> bool:
        if self.conn is None:
            self.conn = psycopg.connect(self.dsn, autocommit=True, application_name=TERMINATOR_APP)
        try:
            row = self.conn.execute(self.condition, self.params).fetchone()
        except psycopg.errors.UndefinedTable:  # no ledger yet
            return False
        return bool(row and row[0])

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


@dataclass
class Killer:
    """Waits until ``ready()`` says the step is mid-way, then SIGKILLs the process of ``task_id``'s running
    try (its pid as the metadata DB records it), once: a worker lost mid-step."""

    ready: Callable[[], bool]
    metadata_db: Path
    dag_id: str
    task_id: str
    on_kill: Callable[[], str | None] | None = None  # e.g. end the old transaction; says what it saw
    timeout: float = 300.0
    killed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Killer:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def describe(self) -> str:
        if not self.killed:
            return "never killed" + (f" ({self.errors[-1][:80]})" if self.errors else "")
        return "SIGKILLed " + ", ".join(self.killed) + "".join(f"; {n}" for n in self.notes)

    def _pid(self) -> tuple[int, int] | None:
        with closing(sqlite3.connect(f"file:{self.metadata_db}?mode=ro", uri=True, timeout=5)) as db:
            row = db.execute(
                "SELECT pid, try_number FROM task_instance WHERE dag_id = ? AND task_id = ?"
                " AND state = 'running' AND pid IS NOT NULL",
                (self.dag_id, self.task_id),
            ).fetchone()
        return (int(row[0]), int(row[1])) if row else None

    def _run(self) -> None:
        try:
            self._watch()
        finally:
            close = getattr(self.ready, "close", None)
            if close is not None:
                close()

    def _watch(self) -> None:
        deadline = time.monotonic() + self.timeout
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                found = self._pid() if self.ready() else None
            except sqlite3.OperationalError:
                found = None
            except Exception as exc:  # a probe's failure is reported in the matrix, not raised in a thread
                self.errors.append(str(exc))
                found = None
            if found is not None:
                pid, try_number = found
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError as exc:
                    self.errors.append(f"pid {pid}: {exc}")
                    continue
                self.killed.append(f"{self.task_id} pid {pid} (try {try_number})")
                note = self.on_kill() if self.on_kill is not None else None
                if note:
                    self.notes.append(note)
                return
            time.sleep(0.02)
