"""What keeps dead rows alive or must not be slowed down: an old transaction, a wraparound autovacuum.

A transaction older than ``max_transaction_age`` (with a snapshot, in this database) pins the xmin horizon:
no VACUUM can reclaim the rows the backfill replaces while it lives, so every batch only adds bloat. An
autovacuum that runs on the table *to prevent wraparound* is the one vacuum that must finish; the
backfill's writes make it longer, so hold until it is done.
"""

from __future__ import annotations

import datetime as dt

import psycopg

from airflow_provider_expand.engine.health.gate import STATS_HINT, GateUnreadable, can_read_all_stats
from airflow_provider_expand.engine.health.units import format_seconds

_OLDEST = (
    "SELECT pid, extract(epoch FROM clock_timestamp() - xact_start)::float8, coalesce(usename, '?'),"
    " coalesce(application_name, '') FROM pg_stat_activity"
    " WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
    " AND backend_xmin IS NOT NULL AND xact_start IS NOT NULL AND query NOT ILIKE 'vacuum%'"
    " ORDER BY xact_start LIMIT 1"
)
_WRAPAROUND = (
    "SELECT a.pid FROM pg_stat_progress_vacuum v JOIN pg_stat_activity a ON a.pid = v.pid"
    " WHERE v.relid = %s AND a.query LIKE 'autovacuum:%%(to prevent wraparound)%%' LIMIT 1"
)


class TransactionAgeGate:
    name = "transaction age"

    def __init__(self, max_age: dt.timedelta, exclude: set[int] | None = None) -> None:
        self.max_age = max_age
        self.exclude = exclude if exclude is not None else set()
        self.checked_privilege = False

    def read(self, conn: psycopg.Connection) -> str | None:
        if not self.checked_privilege:
            self.checked_privilege = True
            if not can_read_all_stats(conn):
                raise GateUnreadable(f"pg_stat_activity hides other roles' transactions: {STATS_HINT}")
        row = conn.execute(_OLDEST).fetchone()
        if row is None or row[0] in self.exclude or row[1] <= self.max_age.total_seconds():
            return None
        pid, seconds, user, app = row
        who = f"pid {pid}, {user}" + (f", {app}" if app else "")
        return (
            f"transaction age {format_seconds(seconds)} > "
            f"{format_seconds(self.max_age.total_seconds())} ({who}: its snapshot keeps the replaced rows from being vacuumed)"
        )


class WraparoundVacuumGate:
    name = "wraparound autovacuum"

    def __init__(self, table_oid: int, label: str) -> None:
        self.table_oid, self.label = table_oid, label
        self.checked_privilege = False

    def read(self, conn: psycopg.Connection) -> str | None:
        if not self.checked_privilege:
            self.checked_privilege = True
            if not can_read_all_stats(conn):
                raise GateUnreadable(f"pg_stat_progress_vacuum hides autovacuum's table: {STATS_HINT}")
        row = conn.execute(_WRAPAROUND, (self.table_oid,)).fetchone()
        if row is None:
            return None
        return f"wraparound autovacuum running on {self.label} (pid {row[0]})"
