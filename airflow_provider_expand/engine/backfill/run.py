"""The batched backfill ('Migrare Date' of the runbook): ``UPDATE <table> SET <set> WHERE <where>`` in
short transactions that never make the application wait long, resumable after a crash.

:func:`run_backfill` is the entry point (what ``BatchBackfillOperator`` calls): it validates the spec
(``plan``), claims the partition's key range and ledger step (``ranges``), estimates
the rows (``progress``), then walks the range and sweeps it (``walk``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from airflow_provider_expand.engine import errors
from airflow_provider_expand.engine.backfill.errors import (
    BackfillBusyError,
    BackfillError,
    BackfillInputError,
    BackfillRowError,
    BackfillRowTimeoutError,
    BackfillStoppedError,
    BackfillSweepError,
)
from airflow_provider_expand.engine.backfill.key import key_text_settings, show_key
from airflow_provider_expand.engine.backfill.plan import BackfillSpec, Target, resolve_target
from airflow_provider_expand.engine.backfill.progress import Progress, count_matching, estimate_rows
from airflow_provider_expand.engine.backfill.ranges import claim_range, peek_range
from airflow_provider_expand.engine.backfill.walk import BackfillWalk
from airflow_provider_expand.engine.database import Connector
from airflow_provider_expand.engine.health.gauge import StepHealth
from airflow_provider_expand.engine.health.hold import HealthHoldError
from airflow_provider_expand.engine.health.settings import HealthSettings
from airflow_provider_expand.engine.ledger.lock import MigrationLockedError, migration_lock, partition_key
from airflow_provider_expand.engine.ledger.store import Ledger
from airflow_provider_expand.engine.lifecycle import Lifecycle

__all__ = [
    "BackfillBusyError",
    "BackfillError",
    "BackfillInputError",
    "BackfillResult",
    "BackfillRowError",
    "BackfillRowTimeoutError",
    "BackfillSpec",
    "BackfillStoppedError",
    "BackfillSweepError",
    "HealthHoldError",
    "HealthSettings",
    "run_backfill",
]

BATCH_LOCK_TIMEOUT = "10s"
PARTITION_LOCK_WAIT = 30.0  # a killed worker's server process may take a moment to notice and go


@dataclass(frozen=True)
class BackfillResult:
    """What one partition's run did (pushed to XCom by the operator)."""

    table: str
    step: str
    part: int
    partitions: int
    key: str
    key_range: str
    dry_run: bool
    rows_done: int
    rows_this_run: int
    rows_swept: int
    batches: int
    seconds: float
    last_key: str | None
    resumed_from: str | None
    rows_estimated: int
    estimate_method: str
    would_change: int | None = None
    splits: int = 0  # batches split in half after hitting their statement_timeout
    locking_windows: int = 0  # windows that locked their rows first (SKIP LOCKED): the app held one nearby
    # health (engine/health): per gate how often and how long it held; batches app sessions waited on
    holds: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    held_seconds: float = 0.0
    lock_waits: int = 0
    vacuums: int = 0
    hot_ratio: float | None = None  # of the row versions this partition replaced, the share HOT
    growth: float | None = None  # the table's size (pg_table_size) after / before this run
    growth_with_indexes: float | None = None  # the same with its indexes (pg_total_relation_size)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _label(spec: BackfillSpec, part: int) -> str:
    return f"{spec.step} part {part + 1}/{spec.partitions}" if spec.partitions > 1 else spec.step


def run_backfill(
    connect: Connector,
    spec: BackfillSpec,
    *,
    migration_id: str,
    log: logging.Logger,
    partition: int = 0,
    dry_run: bool = False,
    ledger: Ledger | None = None,
    progress_every: dt.timedelta = dt.timedelta(seconds=5),
    health: HealthSettings | None = None,
) -> BackfillResult:
    """Backfill partition ``partition`` of ``spec`` (resuming from its ledger checkpoint) and sweep it.

    Every input error is raised as :class:`BackfillInputError` before any row changes. ``dry_run`` only
    counts the rows of the partition that match ``where`` and writes nothing, not even the ledger.
    Failures leave as the engine's errors (``engine/errors.py``): a lost connection or a lock conflict is
    transient (the retry resumes from the checkpoint), anything else definitive; a rollback of the
    migration stops the partition between two batches with :class:`BackfillStoppedError`.
    ``health`` sets the gates read between batches (``engine/health``; default ``HealthSettings()``); one
    that holds longer than its ``max_hold`` raises :class:`HealthHoldError`, a transient error.
    """
    health = health or HealthSettings()
    spec.check(partition)
    ledger = ledger or Ledger()
    label = _label(spec, partition)
    started = time.monotonic()
    with errors.translated(f"{label} of table {spec.table}"), connect() as conn:
        conn.autocommit = True
        key_text_settings(conn)
        target = resolve_target(conn, spec)
        if dry_run:
            return _dry_run(conn, spec, target, ledger, migration_id, partition, label, log, started)
        conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(BATCH_LOCK_TIMEOUT)))
        with _partition_lock(conn, migration_id, spec.step, partition, label):
            key_range, record = claim_range(
                conn,
                ledger,
                target,
                migration_id=migration_id,
                step=spec.step,
                part=partition,
                partitions=spec.partitions,
                batch_size=spec.batch_size,
            )
            resumed_from = record.last_key
            try:
                with errors.translated(f"{label} of table {target.label}"):
                    resumed = target.decode(resumed_from)
                    first = resumed if resumed is not None else key_range.lower
                    remaining = estimate_rows(conn, target, first, key_range.upper)
                    ledger.start_step(
                        conn, migration_id, spec.step, partition, rows_total=record.rows_done + remaining.rows
                    )
                    log.info(
                        "%s: key %s, range %s, %s",
                        label,
                        target.key,
                        key_range.describe(),
                        f"resuming after key {show_key(resumed)} with {record.rows_done:,} rows done"
                        if resumed is not None
                        else "starting",
                    )
                    progress = Progress(
                        label, log, rows_before=record.rows_done, remaining=remaining, every=progress_every
                    )
                    progress.start()
                    gauge = StepHealth.start(connect, conn, target, health, label, log)
                    run = BackfillWalk(
                        conn,
                        spec,
                        target,
                        ledger,
                        migration_id=migration_id,
                        part=partition,
                        key_range=key_range,
                        progress=progress,
                        log=log,
                        table_oid=gauge.oid,
                        hold=gauge.hold,
                        vacuum=gauge.vacuum,
                    )
                    run.check_stop(first)
                    last = first
                    try:
                        if not key_range.empty:
                            gauge.hold.check(conn, force=True)
                            with _batch_commits(conn):
                                last = run.main_pass(first)
                                run.sweep(last)
                    finally:
                        gauge.vacuum.close()
                    progress.finish(run.swept)
                    summary = gauge.finish(conn, run.pacer)
                    ledger.finish_step(
                        conn, migration_id, spec.step, partition, rows_total=progress.rows_done
                    )
            except BaseException as exc:
                Lifecycle(ledger).record_failure(connect, migration_id, spec.step, exc, log, part=partition)
                raise
    return BackfillResult(
        table=spec.table,
        step=spec.step,
        part=partition,
        partitions=spec.partitions,
        key=target.key,
        key_range=key_range.describe(),
        dry_run=False,
        rows_done=progress.rows_done,
        rows_this_run=progress.rows,
        rows_swept=run.swept,
        batches=progress.batches,
        seconds=time.monotonic() - started,
        last_key=target.encode(last),
        resumed_from=resumed_from,
        rows_estimated=remaining.rows,
        estimate_method=remaining.method,
        splits=run.splits,
        locking_windows=run.locking_windows,
        **summary,
    )


def _dry_run(
    conn: psycopg.Connection,
    spec: BackfillSpec,
    target: Target,
    ledger: Ledger,
    migration_id: str,
    partition: int,
    label: str,
    log: logging.Logger,
    started: float,
) -> BackfillResult:
    """Count the rows the partition would change; write nothing, not even the ledger."""
    key_range = peek_range(
        conn,
        ledger,
        target,
        migration_id=migration_id,
        step=spec.step,
        part=partition,
        partitions=spec.partitions,
    )
    would = 0 if key_range.empty else count_matching(conn, target, key_range.lower, key_range.upper)
    log.info(
        "%s: dry run: %s rows of %s with %s in %s match where %r; they would get SET %s, in batches of "
        "%s (adapting towards %s), nothing changed",
        label,
        f"{would:,}",
        target.label,
        target.key,
        key_range.describe(),
        spec.where,
        spec.set,
        f"{spec.batch_size:,}",
        spec.target_batch_time,
    )
    return BackfillResult(
        table=spec.table,
        step=spec.step,
        part=partition,
        partitions=spec.partitions,
        key=target.key,
        key_range=key_range.describe(),
        dry_run=True,
        rows_done=0,
        rows_this_run=0,
        rows_swept=0,
        batches=0,
        seconds=time.monotonic() - started,
        last_key=None,
        resumed_from=None,
        rows_estimated=would,
        estimate_method="exact count",
        would_change=would,
    )


@contextmanager
def _partition_lock(
    conn: psycopg.Connection, migration_id: str, step: str, partition: int, label: str
) -> Iterator[None]:
    """The partition's own advisory lock; held elsewhere (a lost worker's backend not gone yet) is transient."""
    held = False
    try:
        name = f"{migration_id}:{step}:{partition}"
        key = partition_key(migration_id, step, partition)
        with migration_lock(conn, name, wait_seconds=PARTITION_LOCK_WAIT, key=key):
            held = True
            yield
    except MigrationLockedError as exc:
        if held:
            raise
        raise BackfillBusyError(f"{label}: another session is running this partition: {exc}") from exc


@contextmanager
def _batch_commits(conn: psycopg.Connection) -> Iterator[None]:
    """Batches commit without waiting for the WAL flush (``synchronous_commit = off``).

    Safe because a batch and its checkpoint commit atomically: a server crash can lose only the last
    few batches *together with* their checkpoints, which the next run redoes. It saves an fsync per
    batch, and row locks are released that much sooner. The step's final status is written durably.
    """
    conn.execute("SET synchronous_commit = off")
    try:
        yield
    finally:
        if not conn.closed and not conn.broken:
            conn.execute("RESET synchronous_commit")
