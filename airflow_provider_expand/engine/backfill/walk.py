"""The walk of one backfill partition: key windows in short transactions, then the final sweep.

Each window is one statement in one transaction: its end is the ``n``-th key after the checkpoint (an
``OFFSET`` on the key index, so a window costs the same whether many or few of its rows match ``where``);
the rows of the window that match are locked ``FOR NO KEY UPDATE SKIP LOCKED`` (the lock an UPDATE of
non-key columns takes anyway; ``FOR UPDATE`` would also block foreign-key checks of inserts referencing
these rows), updated, and the checkpoint moves to the window's end in the same transaction. It advances
by the window scanned, not by the rows updated, so a window with nothing to do still moves on. Rows
skipped because the application held them are caught by the sweep, which ends only when a read finds no
matching row, and gives up clearly when matching rows keep appearing.

A window (or sweep chunk) that hits the batch ``statement_timeout`` is rolled back and done as its two
halves, each split again if it times out too, down to a single row, which then fails naming its key.
Between batches the walk reads the migration's phase (at most once a second) and stops, its last batch
and checkpoint committed, once a rollback has begun.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from airflow_provider_expand.engine.backfill.batch import BatchRunner, BatchTimedOut
from airflow_provider_expand.engine.backfill.errors import (
    BackfillInputError,
    BackfillRowTimeoutError,
    BackfillStoppedError,
    BackfillSweepError,
)
from airflow_provider_expand.engine.backfill.pacing import BatchSizer, Pacer
from airflow_provider_expand.engine.backfill.plan import BackfillSpec, Target
from airflow_provider_expand.engine.backfill.progress import Progress
from airflow_provider_expand.engine.backfill.ranges import KeyRange
from airflow_provider_expand.engine.health.bloat import Vacuumer
from airflow_provider_expand.engine.health.hold import Hold
from airflow_provider_expand.engine.ledger.store import Ledger

SWEEP_FIND_LIMIT = 10_000  # matching keys read per sweep round
SWEEP_CHUNK = 1_000  # of which this many are fixed per sweep transaction
STOP_CHECK_EVERY = 1.0  # seconds between two reads of the migration's phase
STOPPING_PHASES = {"rolling_back": "rolling back", "rolled_back": "rolled back"}


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


class BackfillWalk:
    """One partition's run on one connection: :meth:`main_pass`, then :meth:`sweep`.

    Between batches (at most every ``STOP_CHECK_EVERY`` seconds) it reads the migration's phase and stops
    once a rollback has begun; a batch that hits its ``statement_timeout`` is split in half and retried.
    """

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
        table_oid: int | None = None,
        hold: Hold | None = None,
        vacuum: Vacuumer | None = None,
    ) -> None:
        self.conn, self.spec, self.target, self.ledger = conn, spec, target, ledger
        self.migration_id, self.part, self.key_range = migration_id, part, key_range
        self.progress, self.log, self.sleep = progress, log, sleep
        low, high = spec.batch_bounds
        self.sizer = BatchSizer(spec.batch_size, spec.target_batch_time, low, high)
        self.pacer = Pacer(
            self.sizer,
            pause=spec.pause,
            table_oid=table_oid,
            label=progress.label,
            log=log,
            hold=hold,
            vacuum=vacuum,
            sleep=sleep,
        )
        self.batches = BatchRunner(conn, spec.batch_statement_timeout, log=log, sleep=sleep)
        self._last: str | None = None  # the checkpoint the walk holds at, for a stop during a hold
        if hold is not None:
            hold.interrupt = lambda: self.check_stop(self._last)
        self.swept = 0
        self.splits = 0
        self._phase_read_at = -math.inf

    def check_stop(self, last: str | None) -> None:
        """Raise :class:`BackfillStoppedError` if the migration is rolling back (read at most once a second).

        Called between batches only, so the partition ends with its last batch and checkpoint committed.
        """
        now = time.monotonic()
        if now - self._phase_read_at < STOP_CHECK_EVERY:
            return
        self._phase_read_at = now
        record = self.ledger.get(self.conn, self.migration_id)
        if record is None or record.phase not in STOPPING_PHASES:
            return
        where = f"after key {last}" if self.progress.batches else "before its first batch"
        self.log.warning("%s: the migration is %s; stopping %s", self.progress.label, record.phase, where)
        raise BackfillStoppedError(
            f"{self.progress.label}: stopped {where} with {self.progress.rows_done:,} rows done: "
            f"migration {self.migration_id!r} is {STOPPING_PHASES[record.phase]}"
        )

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
        self._last = upto if upto is not None else params["upper"]
        with self.conn.pipeline():  # the checkpoint and the pacer's probe in one round trip, locks held
            self._checkpoint(cur, self._last, int(updated))
            self.pacer.probe(cur, int(updated))
        return upto, int(updated)

    def _fix(self, cur: psycopg.Cursor[Any], keys: list[str], last: str | None) -> int:
        """Sweep: update those of ``keys`` that still match and are not locked; returns how many."""
        cur.execute(_fix_sql(self.target, len(keys)), {f"k{i}": key for i, key in enumerate(keys)})
        row = cur.fetchone()
        assert row is not None
        self._refuse_unfinished(row[1])
        self._checkpoint(cur, last, int(row[0]))
        return int(row[0])

    def _what(self, rows: int, start: str) -> str:
        """A batch, named in its errors and logs: the partition, the table and where it starts."""
        return f"{self.progress.label}: the batch of up to {rows:,} rows of {self.target.label} {start}"

    @staticmethod
    def _after(key: str | None) -> str:
        return f"after key {key}" if key is not None else "from the range's start"

    def _split(self, rows: int, start: str, timed_out: BatchTimedOut, single_key: Callable[[], str]) -> int:
        """The size to retry a timed-out batch of ``rows`` with (half); a single row cannot be split."""
        timeout = self.spec.batch_statement_timeout
        if rows <= 1:
            raise BackfillRowTimeoutError(
                f"{self.progress.label}: updating the row of {self.target.label} with key {single_key()} "
                f"alone takes longer than the batch statement_timeout ({timeout}): make set cheaper for "
                "it, or backfill that row by hand and re-run"
            ) from timed_out
        half = rows // 2
        self.splits += 1
        self.log.warning(
            "%s hit statement_timeout (%s) after %.2fs; split: retrying %s rows",
            self._what(rows, start),
            timeout,
            timed_out.seconds,
            f"{half:,}",
        )
        return half

    def _next_key(self, after: str | None, upper: str) -> str:
        """The first key of the range after ``after``: the one row of a one-row window."""
        lower = (
            sql.SQL("{} > %(lower)s").format(self.target.key_ident) if after is not None else sql.SQL("true")
        )
        row = self.conn.execute(
            # Aliased, so that ORDER BY sorts the key itself, not its text form.
            sql.SQL(
                "SELECT {k}::text AS next_key FROM {t} WHERE {lower} AND {k} <= %(upper)s ORDER BY {k} LIMIT 1"
            ).format(k=self.target.key_ident, t=self.target.table, lower=lower),
            {"lower": after, "upper": upper},
        ).fetchone()
        return str(row[0]) if row else "(gone)"

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
        # A timed-out window is done as its two halves (each split again if it times out too), in order,
        # before the sizer picks window sizes again: only the slow stretch is walked in small windows.
        pending: list[int] = []
        while True:
            self.check_stop(last)
            size = pending[0] if pending else self.sizer.size
            params = {"lower": last, "upper": upper, "skip": size - 1}
            started = time.monotonic()
            try:
                upto, updated = self.batches.run(
                    self._what(size, self._after(last)), self._batch, statements[last is not None], params
                )
            except BatchTimedOut as timed_out:
                one_key = functools.partial(self._next_key, last, upper)
                half = self._split(size, self._after(last), timed_out, one_key)
                pending[:1] = [half, size - half]
                self.sizer.observe(size, timed_out.seconds)
                continue
            if pending:
                pending.pop(0)
            seconds = time.monotonic() - started
            self.progress.batch(updated, size)
            self.pacer.after_batch(self.conn, size, seconds, updated)
            if upto is None:  # that window ran to the end of the range
                return upper
            last = upto

    def _fix_keys(self, keys: list[str], last: str | None) -> int:
        """Sweep ``keys`` in one transaction, or in halves (recursively) when that hits the timeout."""
        self.check_stop(last)
        try:
            return self.batches.run(
                self._what(len(keys), f"in the sweep from key {keys[0]}"), self._fix, keys, last
            )
        except BatchTimedOut as timed_out:
            half = self._split(len(keys), f"in the sweep from key {keys[0]}", timed_out, lambda: keys[0])
            return self._fix_keys(keys[:half], last) + self._fix_keys(keys[half:], last)

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
                fixed += self._fix_keys(keys[start : start + SWEEP_CHUNK], last)
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
