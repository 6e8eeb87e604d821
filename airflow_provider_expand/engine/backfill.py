"""The batched backfill ('Migrare Date' of the runbook): ``UPDATE <table> SET <set> WHERE <where>`` in
short transactions that never make the application wait long, resumable after a crash.

Each batch is one statement and one transaction: take the next ``n`` keys after the checkpoint (a window
in key order, so a batch costs the same whether many or few rows match), lock the rows of that window
that match ``where`` with ``FOR NO KEY UPDATE SKIP LOCKED`` (the lock an UPDATE of non-key columns takes
anyway; plain ``FOR UPDATE`` would also block foreign-key checks of inserts that reference these rows),
update them, and move the checkpoint to the end of the window in the ledger, in the same transaction.
The checkpoint advances by the window scanned, not by the rows updated, so a window with nothing to do
still moves on. Rows skipped because the application held them locked are caught by a final sweep over
``where``, which ends only when a read finds no matching row (bounded: it fails clearly if matching rows
keep appearing).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from airflow_provider_expand.engine.backfill_pacing import BatchSizer
from airflow_provider_expand.engine.backfill_plan import (
    BackfillError,
    BackfillInputError,
    BackfillSpec,
    Target,
    resolve_target,
)
from airflow_provider_expand.engine.backfill_progress import Progress, count_matching, estimate_rows
from airflow_provider_expand.engine.backfill_ranges import KeyRange, claim_range, peek_range
from airflow_provider_expand.engine.database import Connector
from airflow_provider_expand.engine.ledger import Ledger
from airflow_provider_expand.engine.lock import migration_lock

__all__ = [
    "BackfillError",
    "BackfillInputError",
    "BackfillResult",
    "BackfillSpec",
    "BackfillSweepError",
    "run_backfill",
]

_T = TypeVar("_T")

SWEEP_FIND_LIMIT = 10_000  # matching keys read per sweep round
SWEEP_CHUNK = 1_000  # of which this many are fixed per sweep transaction
TRANSIENT_RETRIES = 5
BATCH_LOCK_TIMEOUT = "10s"
PARTITION_LOCK_WAIT = 30.0  # a killed worker's server process may take a moment to notice and go


class BackfillSweepError(BackfillError):
    """Rows kept matching ``where`` through every sweep round: something keeps creating them."""


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

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _batch_sql(target: Target, has_lower: bool) -> sql.Composed:
    """One batch: the window ends at the ``n``-th key (or at ``upper``); lock its matching rows, skipping
    locked ones, and update them. Returns (the n-th key or NULL for the range's last window, rows
    updated, a key that still matches ``where`` after the update or NULL)."""
    k, t = target.key_ident, target.table
    ref = sql.SQL("ctid") if target.by_ctid else k
    lower = sql.SQL("{} > %(lower)s").format(k) if has_lower else sql.SQL("true")
    return sql.SQL(
        "WITH _expand_bound AS ("
        " SELECT {k} AS upto FROM {t} WHERE {lower} AND {k} <= %(upper)s ORDER BY {k} OFFSET %(skip)s LIMIT 1"
        "), _expand_batch AS ("
        " SELECT {ref} AS row_ref FROM {t}"
        " WHERE {lower} AND {k} <= coalesce((SELECT upto FROM _expand_bound), %(upper)s) AND ({w})"
        " FOR NO KEY UPDATE SKIP LOCKED"
        "), _expand_done AS ("
        " UPDATE {t} SET {set} WHERE {ref} = ANY(ARRAY(SELECT row_ref FROM _expand_batch))"
        " RETURNING CASE WHEN coalesce(({w}), false) THEN {k}::text END AS unfinished"
        ") SELECT (SELECT upto::text FROM _expand_bound), count(*), min(unfinished) FROM _expand_done"
    ).format(k=k, t=t, ref=ref, lower=lower, w=target.where_sql, set=target.set_sql)


def _fix_sql(target: Target, keys: int) -> sql.Composed:
    """The sweep's fix: the given keys, if they still match and are not locked."""
    k, t = target.key_ident, target.table
    ref = sql.SQL("ctid") if target.by_ctid else k
    marks = sql.SQL(", ").join(sql.Placeholder(f"k{i}") for i in range(keys))
    return sql.SQL(
        "WITH _expand_batch AS ("
        " SELECT {ref} AS row_ref FROM {t} WHERE {k} IN ({marks}) AND ({w}) FOR NO KEY UPDATE SKIP LOCKED"
        "), _expand_done AS ("
        " UPDATE {t} SET {set} WHERE {ref} = ANY(ARRAY(SELECT row_ref FROM _expand_batch))"
        " RETURNING CASE WHEN coalesce(({w}), false) THEN {k}::text END AS unfinished"
        ") SELECT count(*), min(unfinished) FROM _expand_done"
    ).format(k=k, t=t, ref=ref, marks=marks, w=target.where_sql, set=target.set_sql)


class _Run:
    """One partition's run on one connection: the main pass, then the sweep."""

    def __init__(
        self,
        conn: psycopg.Connection,
        spec: BackfillSpec,
        target: Target,
        ledger: Ledger,
        *,
        migration_id: str,
        part: int,
        key_range: KeyRange,
        progress: Progress,
        log: logging.Logger,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.conn, self.spec, self.target, self.ledger = conn, spec, target, ledger
        self.migration_id, self.part, self.key_range = migration_id, part, key_range
        self.progress, self.log, self.sleep = progress, log, sleep
        low, high = spec.batch_bounds
        self.sizer = BatchSizer(spec.batch_size, spec.target_batch_time, low, high)
        self.swept = 0

    def _transaction(self, work: Callable[..., _T], *args: Any) -> _T:
        """Run ``work(cur, *args)`` in one transaction; retry lock timeouts, deadlocks, serialization failures."""
        for attempt in range(TRANSIENT_RETRIES + 1):
            try:
                with self.conn.transaction(), self.conn.cursor() as cur:
                    return work(cur, *args)
            except (
                psycopg.errors.LockNotAvailable,
                psycopg.errors.DeadlockDetected,
                psycopg.errors.SerializationFailure,
            ) as exc:
                if attempt == TRANSIENT_RETRIES:
                    raise BackfillError(
                        f"{self.progress.label}: a batch failed {attempt + 1} times: {exc}"
                    ) from exc
                delay = 0.2 * 2**attempt
                self.log.warning("%s: batch hit %s; retrying in %.1fs", self.progress.label, exc, delay)
                self.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _refuse_unfinished(self, key: str | None) -> None:
        if key is not None:
            raise BackfillInputError(
                "set",
                f"after SET {self.spec.set} the row with key {key} still matches where {self.spec.where!r}: "
                "set must make where false, or the backfill never ends (exclude such rows in where, "
                "e.g. 'AND title IS NOT NULL'); this batch was rolled back",
            )

    def _checkpoint(self, cur: psycopg.Cursor[Any], last_key: str | None, rows: int) -> None:
        self.ledger.checkpoint(
            cur,
            self.migration_id,
            self.spec.step,
            self.part,
            last_key=last_key,
            rows_added=rows,
            batch_size=self.sizer.size,
        )

    def _batch(
        self, cur: psycopg.Cursor[Any], statement: sql.Composed, params: dict[str, Any]
    ) -> tuple[str | None, int]:
        """One window, checkpointed in its own transaction: (its last key, None if it ran to the range's
        end; rows updated)."""
        cur.execute(statement, params)
        row = cur.fetchone()
        assert row is not None
        upto, updated, unfinished = row
        self._refuse_unfinished(unfinished)
        self._checkpoint(cur, upto if upto is not None else params["upper"], int(updated))
        return upto, int(updated)

    def _fix(self, cur: psycopg.Cursor[Any], keys: list[str], last: str | None) -> int:
        """Sweep: update those of ``keys`` that still match and are not locked; returns how many."""
        cur.execute(_fix_sql(self.target, len(keys)), {f"k{i}": key for i, key in enumerate(keys)})
        row = cur.fetchone()
        assert row is not None
        self._refuse_unfinished(row[1])
        self._checkpoint(cur, last, int(row[0]))
        return int(row[0])

    def main_pass(self, last: str | None) -> str | None:
        """Walk ``(last, upper]`` in windows of the batch size; returns the final checkpoint key."""
        upper = self.key_range.upper
        if upper is None:  # the open end: stop at today's last key; later rows are the sweep's
            row = self.conn.execute(
                # The inner alias keeps ORDER BY on the key itself, not on its text form.
                sql.SQL(
                    "SELECT last_key::text FROM (SELECT {k} AS last_key FROM {t} ORDER BY {k} DESC LIMIT 1) s"
                ).format(k=self.target.key_ident, t=self.target.table)
            ).fetchone()
            if row is None:
                return last
            upper = str(row[0])
        statements = {has: _batch_sql(self.target, has) for has in (False, True)}
        while True:
            size = self.sizer.size
            params = {"lower": last, "upper": upper, "skip": size - 1}
            started = time.monotonic()
            upto, updated = self._transaction(self._batch, statements[last is not None], params)
            seconds = time.monotonic() - started
            self.progress.batch(updated, size)
            if upto is None:  # that window ran to the end of the range
                return upper
            last = upto
            self.sizer.observe(size, seconds)
            if self.spec.pause > dt.timedelta(0):
                self.sleep(self.spec.pause.total_seconds())

    def sweep(self, last: str | None) -> None:
        """Fix rows of the range that still match ``where`` until a read finds none; bounded in rounds."""
        find = sql.SQL("SELECT {k}::text FROM {t} WHERE {r} AND ({w}) LIMIT %(n)s").format(
            k=self.target.key_ident,
            t=self.target.table,
            r=self.target.range_condition(self.key_range.lower, self.key_range.upper),
            w=self.target.where_sql,
        )
        params = {"lower": self.key_range.lower, "upper": self.key_range.upper, "n": SWEEP_FIND_LIMIT}
        for round_no in range(self.spec.max_sweep_rounds + 1):
            keys = [str(r[0]) for r in self.conn.execute(find, params).fetchall()]
            if not keys:
                return
            if round_no == self.spec.max_sweep_rounds:
                raise BackfillSweepError(
                    f"{self.progress.label}: rows keep matching where {self.spec.where!r} after "
                    f"{round_no} sweep rounds ({len(keys):,} found in the last, e.g. key {keys[0]}): something "
                    "keeps writing such rows. Is the sync trigger of the expand phase in place, and is all "
                    "code that writes this table the new version?"
                )
            fixed = 0
            for start in range(0, len(keys), SWEEP_CHUNK):
                fixed += self._transaction(self._fix, keys[start : start + SWEEP_CHUNK], last)
            self.swept += fixed
            self.progress.batch(fixed, self.sizer.size)
            self.log.info(
                "%s: sweep round %d: %s rows still matched where, %s fixed%s",
                self.progress.label,
                round_no + 1,
                f"{len(keys):,}",
                f"{fixed:,}",
                "" if fixed == len(keys) else " (the others were locked or changed; looking again)",
            )
            if fixed < len(keys):
                self.sleep(max(self.spec.pause.total_seconds(), 0.05))


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
) -> BackfillResult:
    """Backfill partition ``partition`` of ``spec`` (resuming from its ledger checkpoint) and sweep it.

    Every input error is raised as :class:`BackfillInputError` before any row changes. ``dry_run`` only
    counts the rows of the partition that match ``where`` and writes nothing, not even the ledger.
    """
    spec.check(partition)
    ledger = ledger or Ledger()
    label = _label(spec, partition)
    started = time.monotonic()
    with connect() as conn:
        conn.autocommit = True
        target = resolve_target(conn, spec)
        if dry_run:
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
        conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(BATCH_LOCK_TIMEOUT)))
        with migration_lock(
            conn, f"{migration_id}:{spec.step}:{partition}", wait_seconds=PARTITION_LOCK_WAIT
        ):
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
            first = resumed_from if resumed_from is not None else key_range.lower
            try:
                remaining = estimate_rows(conn, target, first, key_range.upper)
                ledger.start_step(
                    conn, migration_id, spec.step, partition, rows_total=record.rows_done + remaining.rows
                )
                log.info(
                    "%s: key %s, range %s, %s",
                    label,
                    target.key,
                    key_range.describe(),
                    f"resuming after key {resumed_from} with {record.rows_done:,} rows done"
                    if resumed_from is not None
                    else "starting",
                )
                progress = Progress(
                    label, log, rows_before=record.rows_done, remaining=remaining, every=progress_every
                )
                progress.start()
                run = _Run(
                    conn,
                    spec,
                    target,
                    ledger,
                    migration_id=migration_id,
                    part=partition,
                    key_range=key_range,
                    progress=progress,
                    log=log,
                )
                last = first
                if not key_range.empty:
                    with _batch_commits(conn):
                        last = run.main_pass(first)
                        run.sweep(last)
                progress.finish(run.swept)
                ledger.finish_step(conn, migration_id, spec.step, partition, rows_total=progress.rows_done)
            except BaseException as exc:
                _record_failure(conn, ledger, migration_id, spec.step, partition, exc, log)
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
        last_key=last,
        resumed_from=resumed_from,
        rows_estimated=remaining.rows,
        estimate_method=remaining.method,
    )


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


def _record_failure(
    conn: psycopg.Connection,
    ledger: Ledger,
    migration_id: str,
    step: str,
    part: int,
    exc: BaseException,
    log: logging.Logger,
) -> None:
    """Mark the step failed with the reason, if the connection still works (a lost one cannot)."""
    try:
        ledger.finish_step(
            conn, migration_id, step, part, status="failed", error=f"{type(exc).__name__}: {exc}"
        )
    except psycopg.Error as ledger_exc:
        log.warning("could not record the failure of %s part %d in the ledger: %s", step, part, ledger_exc)
