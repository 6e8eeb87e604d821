"""The hold: between batches, read the gates; while one is over, wait (and say so), at most ``max_hold``.

Gates are read at most every ``CHECK_EVERY`` seconds, so a healthy database costs a few cheap catalog reads
per second and no pause at all. While holding, the gates are read again with a growing interval (up to
``MAX_INTERVAL``) and a line is logged every ``LOG_EVERY`` seconds; the release logs
``holding 3.2 s: replica lag 12 MB > 8 MB``. A hold longer than ``max_hold`` raises
:class:`HealthHoldError`, a transient error: the retry policy tries the step again later (resuming from its
checkpoint) instead of keeping a worker slot for hours.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psycopg

from airflow_provider_expand.engine.errors import TransientError
from airflow_provider_expand.engine.health.archive_backlog import ArchiveBacklogGate
from airflow_provider_expand.engine.health.gate import Gate, GateUnreadable
from airflow_provider_expand.engine.health.replica_lag import ReplicaLagGate
from airflow_provider_expand.engine.health.settings import HealthSettings
from airflow_provider_expand.engine.health.units import format_seconds
from airflow_provider_expand.engine.health.wal_rate import WalRateGate
from airflow_provider_expand.engine.health.wraparound import TransactionAgeGate, WraparoundVacuumGate

CHECK_EVERY = 0.5
FIRST_INTERVAL = 0.25
MAX_INTERVAL = 1.0  # the gates, and whether the migration is rolling back, at least once a second
LOG_EVERY = 10.0


class HealthHoldError(TransientError):
    """A health gate held the backfill longer than ``max_hold``; ``gate`` names it."""

    def __init__(self, message: str, gate: str) -> None:
        super().__init__(message)
        self.gate = gate


@dataclass
class HoldCount:
    """How often and how long one gate held the step (the step summary)."""

    holds: int = 0
    seconds: float = 0.0


@dataclass
class Hold:
    """Reads ``gates`` between batches and holds while one is over."""

    gates: Sequence[Gate]
    max_hold: float
    label: str
    log: logging.Logger
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    # called at every re-read while holding: the walk's stop check, so a rollback never waits for a hold
    interrupt: Callable[[], None] | None = None
    # told the reason when a hold starts and None when it ends: the walk writes it into the ledger
    on_hold: Callable[[str | None], None] | None = None
    counts: dict[str, HoldCount] = field(default_factory=dict)
    unreadable: set[str] = field(default_factory=set)
    _read_at: float = float("-inf")

    def _over(self, conn: psycopg.Connection) -> tuple[str, str] | None:
        """The first gate over its limit, as (gate, why); unreadable gates warn once and are dropped."""
        for gate in self.gates:
            if gate.name in self.unreadable:
                continue
            try:
                why = gate.read(conn)
            # no permission, a function or column this server lacks, a view it cannot serve: warn once, go on
            except (
                GateUnreadable,
                psycopg.ProgrammingError,
                psycopg.errors.ObjectNotInPrerequisiteState,
            ) as exc:
                self.unreadable.add(gate.name)
                self.log.warning(
                    "%s: health gate %s cannot be read, not checking it: %s", self.label, gate.name, exc
                )
                continue
            if why is not None:
                return gate.name, why
        return None

    def check(self, conn: psycopg.Connection, *, force: bool = False) -> float:
        """Between two batches: hold while a gate is over; returns the seconds held (0 when healthy)."""
        now = self.clock()
        if not force and now - self._read_at < CHECK_EVERY:
            return 0.0
        self._read_at = now
        over = self._over(conn)
        if over is None:
            return 0.0
        started, logged, interval = now, now, FIRST_INTERVAL
        gate, why = over
        held_by = {gate}
        self.log.info("%s: holding: %s (max_hold %s)", self.label, why, format_seconds(self.max_hold))
        self._tell(why)
        while True:
            held = self.clock() - started
            if held > self.max_hold:
                self._count(held_by, held)
                raise HealthHoldError(
                    f"{self.label}: held {format_seconds(held)} by {gate}, longer than max_hold "
                    f"{format_seconds(self.max_hold)}: {why}; the step is retried later and resumes from "
                    "its checkpoint",
                    gate,
                )
            self.sleep(interval)
            interval = min(interval * 2, MAX_INTERVAL)
            if self.interrupt is not None:
                try:
                    self.interrupt()
                except BaseException:
                    self._count(held_by, self.clock() - started)
                    raise
            self._read_at = self.clock()
            again = self._over(conn)
            if again is None:
                held = self.clock() - started
                self._count(held_by, held)
                self.log.info("%s: holding %.1f s: %s; going on", self.label, held, why)
                self._tell(None)
                return held
            gate, why = again
            held_by.add(gate)
            if self.clock() - logged >= LOG_EVERY:
                logged = self.clock()
                self.log.info("%s: holding %.1f s: %s", self.label, logged - started, why)

    def _tell(self, why: str | None) -> None:
        if self.on_hold is not None:
            self.on_hold(why)

    def _count(self, gates: set[str], seconds: float) -> None:
        for name in gates:
            count = self.counts.setdefault(name, HoldCount())
            count.holds += 1
            count.seconds += seconds

    def summary(self) -> dict[str, dict[str, float]]:
        return {name: {"holds": c.holds, "seconds": round(c.seconds, 1)} for name, c in self.counts.items()}


def gates_for(settings: HealthSettings, table_oid: int, label: str, exclude_pids: set[int]) -> list[Gate]:
    """The gates ``settings`` switches on, cheapest first."""
    gates: list[Gate] = []
    if settings.max_replica_lag_bytes is not None or settings.max_replica_lag_time is not None:
        gates.append(ReplicaLagGate(settings.max_replica_lag_bytes, settings.max_replica_lag_time))
    if settings.max_wal_rate is not None:
        gates.append(WalRateGate(settings.max_wal_rate))
    if settings.max_archive_backlog is not None:
        gates.append(ArchiveBacklogGate(settings.max_archive_backlog))
    if settings.max_transaction_age is not None:
        gates.append(TransactionAgeGate(settings.max_transaction_age, exclude_pids))
    if settings.wraparound_vacuum:
        gates.append(WraparoundVacuumGate(table_oid, label))
    return gates
