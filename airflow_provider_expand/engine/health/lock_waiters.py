"""Application sessions waiting on the batch's row locks, read inside the batch's own transaction.

Just before the batch commits, ``pg_blocking_pids`` names every session whose lock wait our backend
causes (among those ``pg_stat_activity`` shows waiting for a lock: other roles' sessions only with
``pg_read_all_stats``), and their statement's start how long they have waited. The same round trip reads the
transaction's own update counts (``pg_stat_get_xact_tuples_*``), so the step knows its HOT ratio and how
many dead rows it left for VACUUM without asking the statistics collector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

_PROBE = (
    # Sessions waiting for a lock (pg_stat_activity takes no lock-manager lock), then which of them wait
    # for us (pg_blocking_pids does, so only for those): cheap enough for every batch.
    "SELECT count(w.pid), coalesce(extract(epoch FROM max(clock_timestamp() - w.query_start)), 0)::float8,"
    " pg_stat_get_xact_tuples_updated(%(oid)s), pg_stat_get_xact_tuples_hot_updated(%(oid)s)"
    " FROM (SELECT pid, query_start FROM pg_stat_activity"
    "       WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid() OFFSET 0) w"
    " WHERE pg_backend_pid() = ANY(pg_blocking_pids(w.pid))"
)


@dataclass(frozen=True)
class BatchProbe:
    """What one batch did to others and to the table, read before its commit."""

    waiters: int  # sessions waiting on a lock this batch holds
    longest_wait: float  # seconds the longest of them has waited
    updated: int  # row versions this transaction replaced
    hot: int  # of which heap-only (same page, no index entry, no VACUUM needed)


class UpdateCounter:
    """The batch's own update counts from the backend's pending statistics.

    Up to PostgreSQL 15 at least, ``pg_stat_get_xact_tuples_*`` include the earlier transactions whose
    counts the backend has not flushed yet (it flushes when idle, at most once a second): a value below
    the last one plus the batch's rows means a flush came in between, and the value is the batch's own.
    """

    def __init__(self) -> None:
        self.updated = 0
        self.hot = 0

    def batch(self, updated: int, hot: int, rows: int) -> tuple[int, int]:
        """This batch's (updates, HOT updates), given the pending counters read before its commit."""
        if updated < self.updated + rows or hot < self.hot:
            delta = (updated, hot)
        else:
            delta = (updated - self.updated, hot - self.hot)
        self.updated, self.hot = updated, hot
        return delta


def probe_batch(cur: psycopg.Cursor[Any], table_oid: int, counter: UpdateCounter, rows: int) -> BatchProbe:
    """Run inside the batch transaction, after its UPDATE (of ``rows`` rows), before its commit."""
    row = cur.execute(_PROBE, {"oid": table_oid}).fetchone()
    assert row is not None
    updated, hot = counter.batch(int(row[2]), int(row[3]), rows)
    return BatchProbe(int(row[0]), float(row[1]), updated, hot)
