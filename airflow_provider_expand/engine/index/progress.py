"""A second connection that watches a ``CONCURRENTLY`` statement: its progress, its waits, its table lock.

PostgreSQL applies ``lock_timeout`` to every lock wait of ``CREATE INDEX CONCURRENTLY``, including the
waits for older transactions that follow the build (measured on PostgreSQL 15 and 16: a 3 s transaction
fails a build run with ``lock_timeout = 1s`` in "waiting for old snapshots" and leaves an invalid index).
Those waits block no other session, so the statement runs without ``lock_timeout`` and this monitor
enforces it where it protects the application: while the statement queues for a relation lock, it is
cancelled once that wait reaches ``lock_timeout``. Meanwhile it logs ``pg_stat_progress_create_index``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any

import psycopg
from psycopg.rows import dict_row

# Fast enough that a lock wait is cancelled within ~100 ms of lock_timeout; used until the build starts.
WATCH_TICK = timedelta(milliseconds=100)

_STATUS_SQL = """
SELECT a.wait_event_type, a.wait_event,
       CASE WHEN a.wait_event_type = 'Lock' AND a.wait_event = 'relation' THEN
            (SELECT max(clock_timestamp() - l.waitstart) FROM pg_locks l
              WHERE l.pid = a.pid AND NOT l.granted AND l.locktype = 'relation') END AS relation_wait,
       p.phase, p.blocks_done, p.blocks_total, p.tuples_done, p.tuples_total,
       p.lockers_done, p.lockers_total, p.current_locker_pid
  FROM pg_stat_activity a
  LEFT JOIN pg_stat_progress_create_index p ON p.pid = a.pid
 WHERE a.pid = %s
"""

_BLOCKERS_SQL = """
SELECT pid, state, application_name, extract(epoch FROM clock_timestamp() - xact_start) AS xact_age
  FROM pg_stat_activity WHERE pid = ANY(pg_blocking_pids(%(pid)s)) OR pid = %(locker)s
 ORDER BY xact_start NULLS LAST
"""


@dataclass(frozen=True)
class Progress:
    """One sample of ``pg_stat_progress_create_index`` for the watched backend."""

    phase: str
    blocks_done: int
    blocks_total: int
    tuples_done: int
    tuples_total: int
    lockers_done: int
    lockers_total: int
    current_locker_pid: int

    def describe(self) -> str:
        """``phase — blocks a/b (p%), tuples c/d``: the line an operator reads in the task log."""
        parts = [self.phase]
        if self.phase.startswith("waiting for"):
            # Block and tuple counters keep the previous phase's values here: only the lockers count.
            if self.lockers_total:
                parts.append(f"transactions waited for {self.lockers_done}/{self.lockers_total}")
            return " — ".join([parts[0], ", ".join(parts[1:])]) if len(parts) > 1 else parts[0]
        if self.blocks_total:
            parts.append(
                f"blocks {self.blocks_done}/{self.blocks_total} ({_pct(self.blocks_done, self.blocks_total)})"
            )
        if self.tuples_total or self.tuples_done:
            tuples = f"tuples {self.tuples_done}/{self.tuples_total}"
            if self.tuples_total:
                tuples += f" ({_pct(self.tuples_done, self.tuples_total)})"
            parts.append(tuples)
        return " — ".join([parts[0], ", ".join(parts[1:])]) if len(parts) > 1 else parts[0]


def _pct(done: int, total: int) -> str:
    return f"{100.0 * done / total:.1f}%"


class StatementMonitor:
    """Watch backend ``pid`` from ``conn`` (a second, autocommit connection) while the block runs.

    ``label`` names the index in every line. After the block, :attr:`cancelled_for_lock` tells whether
    the monitor cancelled the statement because its relation lock wait reached ``lock_timeout``.
    """

    def __init__(
        self,
        conn: psycopg.Connection,
        pid: int,
        *,
        label: str,
        lock_timeout: timedelta,
        progress_interval: timedelta,
        log: logging.Logger,
    ) -> None:
        self.conn = conn
        self.pid = pid
        self.label = label
        self.lock_timeout = lock_timeout
        self.progress_interval = progress_interval
        self.log = log
        self.cancelled_for_lock = False
        self.blockers: str = ""
        self.phases: list[str] = []
        self.reports = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"expand-monitor-{pid}", daemon=True)

    def __enter__(self) -> StatementMonitor:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        interval = max(self.progress_interval.total_seconds(), 0.1)
        next_report = time.monotonic() + interval
        tick = WATCH_TICK.total_seconds()
        failures = 0
        while not self._stop.wait(tick):
            try:
                with self.conn.cursor(row_factory=dict_row) as cur:
                    row = cur.execute(_STATUS_SQL, (self.pid,)).fetchone()
                failures = 0
            except psycopg.Error as exc:
                failures += 1
                if self.conn.closed or failures >= 3:
                    self.log.warning("%s: progress monitor stopped: %s", self.label, exc)
                    return
                continue
            if row is None:
                return  # the watched backend is gone
            if self._enforce_lock_timeout(row):
                return
            progress = _progress(row)
            if progress is not None:
                tick = min(interval, 1.0)  # the table lock is held from here on: slow down
            now = time.monotonic()
            new_phase = progress is not None and (not self.phases or self.phases[-1] != progress.phase)
            if progress is not None and new_phase:
                self.phases.append(progress.phase)
            if now >= next_report or new_phase:
                self._report(row, progress)
                next_report = now + interval

    def _enforce_lock_timeout(self, row: dict[str, Any]) -> bool:
        wait = row["relation_wait"]
        if wait is None or wait < self.lock_timeout:
            return False
        self.blockers = self._describe_blockers(None)
        self.cancelled_for_lock = True  # set before the cancel: the build thread reads it afterwards
        self.conn.execute("SELECT pg_cancel_backend(%s)", (self.pid,))
        self.log.warning(
            "%s: waited %.1f s for a table lock (lock_timeout %.1f s)%s; cancelled this try",
            self.label,
            wait.total_seconds(),
            self.lock_timeout.total_seconds(),
            f", held by {self.blockers}" if self.blockers else "",
        )
        return True

    def _report(self, row: dict[str, Any], progress: Progress | None) -> None:
        self.reports += 1
        waiting_for_transactions = (progress is not None and progress.phase.startswith("waiting for")) or (
            progress is None and row["wait_event_type"] == "Lock" and row["wait_event"] == "virtualxid"
        )
        if progress is None and not waiting_for_transactions:
            if row["wait_event_type"] == "Lock":
                self.log.info("%s: waiting for a %s lock", self.label, row["wait_event"])
            return
        text = progress.describe() if progress is not None else "waiting for older transactions"
        if not waiting_for_transactions:
            self.log.info("%s: %s", self.label, text)
            return
        locker = progress.current_locker_pid if progress is not None else None
        blockers = self._describe_blockers(locker or None)
        self.log.info(
            "%s: %s%s — it waits until transactions older than it finish; this is not a lock "
            "timeout and blocks no other session",
            self.label,
            text,
            f"; waiting on {blockers}" if blockers else "",
        )

    def _describe_blockers(self, locker: int | None) -> str:
        try:
            with self.conn.cursor(row_factory=dict_row) as cur:
                rows = cur.execute(_BLOCKERS_SQL, {"pid": self.pid, "locker": locker}).fetchall()
        except psycopg.Error:
            return ""
        parts = []
        for r in rows[:5]:
            age = f", transaction open {r['xact_age']:.1f} s" if r["xact_age"] is not None else ""
            app = f", application {r['application_name']!r}" if r["application_name"] else ""
            parts.append(f"pid {r['pid']} ({r['state']}{age}{app})")
        return "; ".join(parts)


def _progress(row: dict[str, Any]) -> Progress | None:
    if row["phase"] is None:
        return None
    return Progress(
        phase=str(row["phase"]),
        blocks_done=int(row["blocks_done"] or 0),
        blocks_total=int(row["blocks_total"] or 0),
        tuples_done=int(row["tuples_done"] or 0),
        tuples_total=int(row["tuples_total"] or 0),
        lockers_done=int(row["lockers_done"] or 0),
        lockers_total=int(row["lockers_total"] or 0),
        current_locker_pid=int(row["current_locker_pid"] or 0),
    )
