"""The one lock-retry policy: how long a try may wait for a table lock, how often to try again, and the
backoff between tries; the DDL runner and the concurrent index builds both use it.

A lock wait queues every later query on the table behind it, so each try waits at most ``lock_timeout``
and gives up; the next try comes after an exponential backoff with jitter, so retriers do not stampede.
The callers' defaults differ and stay theirs: the DDL runner's full jitter from 200 ms
(:class:`LockRetryPolicy` itself), the index builds' jitter in [50 %, 100 %] from 250 ms
(:meth:`LockRetryPolicy.for_index`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from airflow_provider_expand.engine.errors import ConcurrencyConflictError
from airflow_provider_expand.engine.statements import Statement

LOCK_TIMEOUT_SQLSTATE = "55P03"


class LockRetriesExhaustedError(ConcurrencyConflictError):
    """Every try timed out waiting for a lock: something holds the table for longer than we may wait.
    Transient: the DAG's retry tries again later (a phase skips the groups already applied)."""

    def __init__(
        self,
        message: str,
        sqlstate: str | None = LOCK_TIMEOUT_SQLSTATE,
        *,
        tries: int,
        statement: Statement | None = None,
    ) -> None:
        super().__init__(message, sqlstate)
        self.tries = tries
        self.statement = statement  # the phase file's statement, when a phase gave up


@dataclass(frozen=True)
class LockRetryPolicy:
    """How patient a step is with locks; all durations are ``timedelta``."""

    lock_timeout: timedelta
    retries: int
    backoff_base: timedelta = timedelta(milliseconds=200)
    backoff_max: timedelta = timedelta(seconds=30)
    jitter_floor: float = 0.0  # the shortest wait as a share of the capped backoff: 0 is full jitter

    @classmethod
    def for_index(cls, lock_timeout: timedelta = timedelta(seconds=2), retries: int = 20) -> LockRetryPolicy:
        """The index builds' policy: each build is long, so retries back off from 250 ms, never below half."""
        return cls(lock_timeout, retries, backoff_base=timedelta(milliseconds=250), jitter_floor=0.5)

    def __post_init__(self) -> None:
        if self.lock_timeout <= timedelta(0):
            raise ValueError(f"lock_timeout must be positive, got {self.lock_timeout}")
        if self.retries < 0:
            raise ValueError(f"ddl_retries must be >= 0, got {self.retries}")
        if self.backoff_base <= timedelta(0) or self.backoff_max < self.backoff_base:
            raise ValueError("backoff_base must be positive and not above backoff_max")
        if not 0.0 <= self.jitter_floor <= 1.0:
            raise ValueError(f"jitter_floor must be within [0, 1], got {self.jitter_floor}")

    def backoff(self, attempt: int) -> timedelta:
        """The wait after try ``attempt`` (from 1): uniform in [floor * cap, cap], with
        cap = min(max, base * 2**(attempt-1))."""
        cap = min(self.backoff_max, self.backoff_base * (2 ** max(attempt - 1, 0))).total_seconds()
        return timedelta(seconds=random.uniform(self.jitter_floor * cap, cap))
