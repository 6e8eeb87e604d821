"""The server's WAL rate: how fast ``pg_current_wal_lsn()`` moves, over the last few seconds.

All WAL counts (the application's too): the gate protects what WAL volume costs (network to replicas,
archive, disk), whoever writes it. The rate is taken over a sliding window so one burst does not hold.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

import psycopg

from airflow_provider_expand.engine.health.units import format_size

WINDOW = 5.0  # seconds of samples the rate is taken over
MIN_SPAN = 0.4  # no verdict before this much time is covered (just under one check interval)


class WalRateGate:
    name = "WAL rate"

    def __init__(self, max_rate: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_rate, self.clock = max_rate, clock
        self.samples: collections.deque[tuple[float, int]] = collections.deque()

    def read(self, conn: psycopg.Connection) -> str | None:
        row = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint").fetchone()
        assert row is not None
        now = self.clock()
        self.samples.append((now, int(row[0])))
        while len(self.samples) > 2 and now - self.samples[1][0] >= WINDOW:
            self.samples.popleft()
        first_at, first = self.samples[0]
        span = now - first_at
        if span < MIN_SPAN:
            return None
        rate = (self.samples[-1][1] - first) / span
        if rate <= self.max_rate:
            return None
        return f"WAL rate {format_size(rate)}/s > {format_size(self.max_rate)}/s"
