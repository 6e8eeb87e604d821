"""The backfill's task log: rows done of an estimated total, rows per second, batch size and ETA.

The total is estimated once per run, cheaply: an exact ``count(*)`` over the partition's remaining key
range while the table is small (pg_class.reltuples <= EXACT_COUNT_UP_TO), else the same count on a
``TABLESAMPLE SYSTEM`` of about SAMPLE_ROWS rows, scaled up. Which one was used is logged.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from airflow_provider_expand.engine.backfill.key import Key
from airflow_provider_expand.engine.backfill.plan import Target

EXACT_COUNT_UP_TO = 200_000
SAMPLE_ROWS = 50_000


@dataclass(frozen=True)
class RowEstimate:
    """How many rows of a key range still match ``where``, and how that was found out."""

    rows: int
    method: str


def count_matching(conn: psycopg.Connection, target: Target, lower: Key | None, upper: Key | None) -> int:
    """Exactly how many rows of ``lower < key <= upper`` match ``where`` (a read-only scan)."""
    window, params = target.range_condition(lower, upper)
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {t} WHERE {r} AND ({w})").format(
            t=target.table, r=window, w=target.where_sql
        ),
        params,
    ).fetchone()
    return int(row[0]) if row else 0


def estimate_rows(
    conn: psycopg.Connection, target: Target, lower: Key | None, upper: Key | None
) -> RowEstimate:
    """Rows of ``lower < key <= upper`` that match ``where``: exact when small, sampled when large."""
    if not target.by_ctid or target.reltuples <= EXACT_COUNT_UP_TO:
        return RowEstimate(count_matching(conn, target, lower, upper), "exact count")
    pct = min(100.0, max(0.01, 100.0 * SAMPLE_ROWS / target.reltuples))
    window, params = target.range_condition(lower, upper)
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {t} TABLESAMPLE SYSTEM (%(pct)s) WHERE {r} AND ({w})").format(
            t=target.table, r=window, w=target.where_sql
        ),
        {**params, "pct": pct},
    ).fetchone()
    sampled = int(row[0]) if row else 0
    return RowEstimate(round(sampled * 100.0 / pct), f"estimate from a {pct:.2f}% TABLESAMPLE")


def _duration(seconds: float) -> str:
    return str(dt.timedelta(seconds=round(seconds)))


class Progress:
    """Counts rows and logs a progress line at least every ``every`` and once at the end."""

    def __init__(
        self,
        label: str,
        log: logging.Logger,
        *,
        rows_before: int,
        remaining: RowEstimate,
        every: dt.timedelta = dt.timedelta(seconds=5),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.log = log
        self.rows_before = rows_before
        self.total = rows_before + remaining.rows
        self.method = remaining.method
        self.every = every.total_seconds()
        self.clock = clock
        self.started = clock()
        self.last_logged = self.started
        self.rows = 0
        self.batches = 0
        self.batch_size = 0

    @property
    def rows_done(self) -> int:
        return self.rows_before + self.rows

    @property
    def elapsed(self) -> float:
        return self.clock() - self.started

    def rate(self) -> float:
        elapsed = self.elapsed
        return self.rows / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        total = max(self.total, self.rows_done)
        pct = 100.0 * self.rows_done / total if total else 100.0
        rate = self.rate()
        remaining = max(total - self.rows_done, 0)
        eta = _duration(remaining / rate) if rate > 0 else "unknown"
        return (
            f"{self.label}: {self.rows_done:,} / ~{total:,} rows ({pct:.1f}%), {rate:,.0f} rows/s, "
            f"batch size {self.batch_size:,}, ETA {eta}"
        )

    def start(self) -> None:
        self.log.info(
            "%s: about %s rows to do (%s)", self.label, f"{self.total - self.rows_before:,}", self.method
        )

    def batch(self, rows: int, batch_size: int) -> None:
        """Record one committed batch; log if the last line is ``every`` old."""
        self.rows += rows
        self.batches += 1
        self.batch_size = batch_size
        now = self.clock()
        if now - self.last_logged >= self.every:
            self.last_logged = now
            self.log.info("%s", self.line())

    def finish(self, swept: int) -> None:
        self.total = self.rows_done
        self.log.info(
            "%s: done, %s rows (%s this run, %s of them by the final sweep) in %s, %s rows/s, batch size %s",
            self.label,
            f"{self.rows_done:,}",
            f"{self.rows:,}",
            f"{swept:,}",
            _duration(self.elapsed),
            f"{self.rate():,.0f}",
            f"{self.batch_size:,}",
        )
