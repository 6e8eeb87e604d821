"""Replica lag, read on the primary from ``pg_stat_replication`` (no connection to a replica needed).

In bytes, the replay position's distance from the primary's current WAL position; as a time,
``replay_lag`` (which keeps growing while replay is stuck: the walsender interpolates). The worst
streaming replica counts; one in ``startup`` or ``backup`` state is not replaying yet.
"""

from __future__ import annotations

import datetime as dt

import psycopg

from airflow_provider_expand.engine.health.gate import STATS_HINT, GateUnreadable
from airflow_provider_expand.engine.health.units import format_seconds, format_size

_QUERY = (
    "SELECT state, coalesce(application_name, '') || coalesce(' at ' || host(client_addr), ''),"
    " pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint, extract(epoch FROM replay_lag)::float8"
    " FROM pg_stat_replication"
)


class ReplicaLagGate:
    name = "replica lag"

    def __init__(self, max_bytes: int | None, max_time: dt.timedelta | None) -> None:
        self.max_bytes, self.max_time = max_bytes, max_time

    def read(self, conn: psycopg.Connection) -> str | None:
        rows = conn.execute(_QUERY).fetchall()
        if any(state is None for state, *_ in rows):
            raise GateUnreadable(
                f"pg_stat_replication hides the replicas' positions from this role: {STATS_HINT}"
            )
        worst: tuple[float, str] | None = None
        for state, who, lag_bytes, lag_seconds in rows:
            if state not in ("streaming", "catchup"):
                continue
            if self.max_bytes is not None and lag_bytes is not None and lag_bytes > self.max_bytes:
                over = lag_bytes / self.max_bytes
                text = f"replica lag {format_size(lag_bytes)} > {format_size(self.max_bytes)} ({who})"
                worst = max(worst or (0.0, ""), (over, text))
            if self.max_time is not None and lag_seconds is not None:
                limit = self.max_time.total_seconds()
                if lag_seconds > limit:
                    text = (
                        f"replica lag {format_seconds(lag_seconds)} > "
                        f"{format_seconds(self.max_time.total_seconds())} ({who})"
                    )
                    worst = max(worst or (0.0, ""), (lag_seconds / limit if limit else float("inf"), text))
        return worst[1] if worst else None
