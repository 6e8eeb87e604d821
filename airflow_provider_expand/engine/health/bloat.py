"""No bloat: the space of each batch's dead rows is reused by the next batches, not added to the table.

A plain ``UPDATE`` of every row doubles a table: each row gets a new version and the old one stays until
a VACUUM after the end. A backfill commits each batch, so its replaced versions are dead to everyone
soon after; what stops their space being reused is that only VACUUM tells the free space map about it. So
once the backfill's non-HOT updates (HOT ones reuse their own page) pass ``VACUUM_FRACTION`` of the table,
a plain VACUUM of the table runs on a separate connection, in the background, while the batches go on:

- ``SKIP_LOCKED``: never waits behind autovacuum or DDL on the table (it skips this round instead);
- index cleanup left to PostgreSQL (``INDEX_CLEANUP AUTO``): it skips the scan of every index while few
  pages have dead items, and otherwise frees their line pointers for reuse. Measured on 1,000,000 rows
  (docs/benchmarks.md): ``INDEX_CLEANUP OFF`` grew the table 1.32x, AUTO 1.27-1.28x, the longer rows alone
  (a VACUUM FULL afterwards) 1.21x; the btree's bottom-up deletion removes old index entries meanwhile;
- ``TRUNCATE OFF``: never takes the ACCESS EXCLUSIVE lock that truncating the table's end needs.

Never ``VACUUM FULL``: it rewrites the table under ACCESS EXCLUSIVE, which is the outage the backfill avoids.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import psycopg
from psycopg import sql

from airflow_provider_expand.engine.database import Connector
from airflow_provider_expand.engine.health.lock_waiters import BatchProbe
from airflow_provider_expand.engine.health.units import format_size

VACUUM_FRACTION = 0.02  # of the table's rows, replaced by non-HOT updates since the last VACUUM
VACUUM_MIN_ROWS = 10_000  # below that, a VACUUM costs more than the space it returns
VACUUM_SQL = "VACUUM (SKIP_LOCKED, TRUNCATE OFF) {}"


@dataclass(frozen=True)
class TableSize:
    """A table's size with and without its indexes and TOAST, in bytes."""

    heap: int
    total: int

    @classmethod
    def read(cls, conn: psycopg.Connection, oid: int) -> TableSize:
        """For a partitioned table, the sum over its partitions."""
        row = conn.execute(
            "WITH leaves AS (SELECT relid FROM pg_partition_tree(%(oid)s) WHERE isleaf)"
            " SELECT coalesce(sum(pg_table_size(relid)), 0)::bigint,"
            " coalesce(sum(pg_total_relation_size(relid)), 0)::bigint"
            " FROM (SELECT relid FROM leaves UNION ALL"
            " SELECT %(oid)s::regclass WHERE NOT EXISTS (SELECT FROM leaves)) r",
            {"oid": oid},
        ).fetchone()
        assert row is not None
        return cls(int(row[0]), int(row[1]))


def growth_line(before: TableSize, after: TableSize, updated: int, hot: int) -> str:
    """``the table grew 1.08x (88 MB -> 95 MB; 1.30x with its indexes), 0% HOT of 1,000,000 row updates``."""
    heap = after.heap / before.heap if before.heap else 1.0
    total = after.total / before.total if before.total else 1.0
    hot_part = f", {100.0 * hot / updated:.0f}% HOT of {updated:,} row updates" if updated else ""
    return (
        f"the table grew {heap:.2f}x ({format_size(before.heap)} -> {format_size(after.heap)}; {total:.2f}x "
        f"with its indexes){hot_part}"
    )


class Vacuumer:
    """Counts the backfill's dead rows and runs a background VACUUM each time they pass the threshold."""

    def __init__(
        self,
        connect: Connector,
        table: sql.Composable,
        label: str,
        reltuples: float,
        log: logging.Logger,
        *,
        enabled: bool = True,
    ) -> None:
        self.connect, self.table, self.label, self.log, self.enabled = connect, table, label, log, enabled
        self.threshold = max(VACUUM_MIN_ROWS, round(VACUUM_FRACTION * max(reltuples, 0.0)))
        self.pending = 0  # non-HOT updates since the last VACUUM started
        self.updated = 0
        self.hot = 0
        self.vacuums = 0
        self.skipped = 0
        self.seconds = 0.0
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()
        self._notices: list[str] = []

    def note(self, probe: BatchProbe | None, rows: int) -> None:
        """Record one committed batch; start a VACUUM if enough dead rows piled up and none is running."""
        if probe is not None and probe.updated:
            self.updated += probe.updated
            self.hot += probe.hot
            self.pending += probe.updated - probe.hot
        else:  # a partitioned table counts its updates in its partitions: take every row as non-HOT
            self.updated += rows
            self.pending += rows
        if not self.enabled or self.pending < self.threshold or self.running:
            return
        self.pending = 0
        self._thread = threading.Thread(target=self._vacuum, name=f"vacuum {self.label}", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _vacuum(self) -> None:
        started = time.monotonic()
        try:
            with self._lock:
                if self._conn is None or self._conn.closed:
                    self._conn = self.connect()
                    self._conn.autocommit = True
                    self._conn.execute("SET statement_timeout = 0")
                    self._conn.add_notice_handler(lambda d: self._notices.append(d.message_primary or ""))
                self._notices.clear()
                self._conn.execute(sql.SQL(VACUUM_SQL).format(self.table))
            if any("skipping" in n for n in self._notices):
                self.skipped += 1
            else:
                self.vacuums += 1
            self.seconds += time.monotonic() - started
        except psycopg.Error as exc:
            self.enabled = False
            self.log.warning(
                "%s: VACUUM failed, not vacuuming during this step any more: %s", self.label, exc
            )

    def close(self) -> None:
        """Wait for a running VACUUM (it only reclaims; the batches are done) and close its connection."""
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if self._conn is not None and not self._conn.closed:
                self._conn.close()

    def summary(self) -> str:
        if not self.enabled and not self.vacuums:
            return "no VACUUM"
        skipped = f" ({self.skipped} skipped: the table was locked)" if self.skipped else ""
        return f"{self.vacuums} VACUUM(s) in {self.seconds:.1f} s{skipped}"
