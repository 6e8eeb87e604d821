"""How big the next batch is and when it starts: feedback, not a fixed pause.

A batch holds its row locks until it commits, so its duration is the longest an application write can
wait on it; :class:`BatchSizer` follows the measured time per row: down at once when a batch overran the
target, up by at most 2x per batch, always within bounds. :class:`Pacer` adds what happens between two
batches: app sessions that waited on the batch (read just before its commit) halve the next one and get a
moment to go through; the dead rows are counted for the background VACUUM; the health gates hold while the
database says so (``engine/health``). With everything healthy there is no pause at all, unless the spec
sets an explicit ``pause``.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg

from airflow_provider_expand.engine.health.bloat import Vacuumer
from airflow_provider_expand.engine.health.hold import Hold
from airflow_provider_expand.engine.health.lock_waiters import BatchProbe, UpdateCounter, probe_batch

LOG_LOCK_WAITS_EVERY = 5.0  # seconds between two log lines about app sessions waiting on batches


class BatchSizer:
    """Keeps the batch size near ``target`` seconds per batch; fixed when ``target`` is ``None``."""

    def __init__(self, start: int, target: dt.timedelta | None, low: int, high: int) -> None:
        self.low = low
        self.high = high
        self.size = min(max(start, low), high)
        self.target = target.total_seconds() if target is not None else None

    def observe(self, rows_scanned: int, seconds: float) -> int:
        """Feed back one batch (rows it covered, wall time of its transaction); return the next size."""
        if self.target is None or seconds <= 0 or rows_scanned <= 0:
            return self.size
        if rows_scanned < self.size and seconds < self.target:
            return self.size  # a short last window says nothing about the time per row
        ideal = rows_scanned * self.target / seconds
        # Too slow: straight down to the size that fits (the overrun is an app write's wait). Room to grow:
        # halfway towards the ideal, at most 2x, so one fast batch cannot swing it.
        grown = self.size * (1 + min(ideal / self.size, 2.0)) / 2
        proposed = ideal if ideal < self.size else grown
        self.size = round(min(max(proposed, self.low), self.high))
        return self.size

    def shrink(self) -> int:
        """Halve the size (app sessions waited on the last batch); the feedback grows it back."""
        self.size = max(self.low, self.size // 2)
        return self.size


class Pacer:
    """What happens around each batch besides the UPDATE: the in-transaction probe, then the pacing."""

    def __init__(
        self,
        sizer: BatchSizer,
        *,
        pause: dt.timedelta,
        table_oid: int | None,
        label: str,
        log: logging.Logger,
        hold: Hold | None = None,
        vacuum: Vacuumer | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sizer, self.pause, self.table_oid = sizer, pause.total_seconds(), table_oid
        self.label, self.log, self.hold, self.vacuum, self.sleep, self.clock = (
            label,
            log,
            hold,
            vacuum,
            sleep,
            clock,
        )
        self.lock_waits = 0  # batches that made app sessions wait
        self.waiters = 0  # sessions they made wait, in all
        self.held = 0.0  # seconds the health gates held
        self._probe: BatchProbe | None = None
        self._counter = UpdateCounter()
        self._logged_waits_at = float("-inf")
        self._unlogged_waits = 0

    def probe(self, cur: psycopg.Cursor[Any], rows: int) -> None:
        """Inside the batch transaction, after its UPDATE of ``rows``: who waits on us, what it replaced."""
        if self.table_oid is not None:
            self._probe = probe_batch(cur, self.table_oid, self._counter, rows)

    def after_batch(self, conn: psycopg.Connection, size: int, seconds: float, rows: int) -> None:
        """Between two batches: size the next one, pause if app sessions waited, then the health gates."""
        probe, self._probe = self._probe, None
        self.sizer.observe(size, seconds)
        if self.vacuum is not None:
            self.vacuum.note(probe, rows)
        if probe is not None and probe.waiters:
            self._lock_waits(probe)
        if self.pause > 0:
            self.sleep(self.pause)
        if self.hold is not None:
            self.held += self.hold.check(conn)

    def _lock_waits(self, probe: BatchProbe) -> None:
        self.lock_waits += 1
        self.waiters += probe.waiters
        self._unlogged_waits += 1
        size = self.sizer.shrink()
        # Let them through before the next batch takes its rows: as long as they waited, at most a target.
        target = self.sizer.target if self.sizer.target is not None else 0.05
        self.sleep(min(probe.longest_wait, target))
        now = self.clock()
        if now - self._logged_waits_at >= LOG_LOCK_WAITS_EVERY:
            self._logged_waits_at = now
            self.log.info(
                "%s: %d app session(s) waited up to %.0f ms on a batch (%d batch(es) since the last line): "
                "next batch %s rows",
                self.label,
                probe.waiters,
                probe.longest_wait * 1000,
                self._unlogged_waits,
                f"{size:,}",
            )
            self._unlogged_waits = 0

    def summary(self) -> dict[str, Any]:
        return {
            "lock_waits": self.lock_waits,
            "holds": self.hold.summary() if self.hold is not None else {},
            "held_seconds": round(self.held, 1),
        }
