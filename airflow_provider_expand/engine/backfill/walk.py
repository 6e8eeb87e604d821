"""The walk of one backfill partition: key windows in short transactions, then the final sweep.

Each window is one statement in one transaction: its end is the ``n``-th key after the checkpoint (an
``OFFSET`` on the key index, so a window costs the same whether many or few of its rows match ``where``);
the rows of the window that match are updated, and the checkpoint moves to the window's end in the same
transaction. It advances by the window scanned, not by the rows updated, so a window with nothing to do
still moves on. A window's UPDATE may wait at most ``ROW_LOCK_WAIT`` for a row the application holds;
past that it is rolled back and run again locking its rows ``FOR NO KEY UPDATE SKIP LOCKED`` (the lock an
UPDATE of non-key columns takes anyway), as are the next ``LOCKING_WINDOWS`` windows, so a batch never
waits long on the application, and the application waits on a batch at most that much longer. Rows
skipped because the application held them are caught by the sweep, which ends only when a read finds no
matching row, and gives up clearly when matching rows keep appearing.

The key may be any number of columns of any ordered type: windows are row comparisons on it. A window (or
sweep chunk) that hits the batch ``statement_timeout``, or fails on some row's data (``set`` raising), is
rolled back and done as its two halves, each split again if it fails too, down to a single row, which
then fails naming its key; the rows before it stay done.
Between batches the walk reads the migration's phase (at most once a second) and stops, its last batch
and checkpoint committed, once a rollback has begun.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from airflow_provider_expand.engine.backfill.batch import (
    BatchRowFailed,
    BatchRowsLocked,
    BatchRunner,
    BatchSplit,
    BatchTimedOut,
)
from airflow_provider_expand.engine.backfill.errors import (
    BackfillInputError,
    BackfillRowError,
    BackfillRowTimeoutError,
    BackfillStoppedError,
    BackfillSweepError,
)
from airflow_provider_expand.engine.backfill.key import Key, show_key
from airflow_provider_expand.engine.backfill.pacing import BatchSizer, Pacer
from airflow_provider_expand.engine.backfill.plan import BackfillSpec, Target
from airflow_provider_expand.engine.backfill.progress import Progress
from airflow_provider_expand.engine.backfill.ranges import KeyRange
from airflow_provider_expand.engine.backfill.windows import batch_sql, fix_sql, read_key
from airflow_provider_expand.engine.health.bloat import Vacuumer
from airflow_provider_expand.engine.health.hold import Hold
from airflow_provider_expand.engine.ledger.store import Ledger

# Below deadlock_timeout (1 s by default), so a batch and an app transaction waiting on each other never
# deadlock: the batch gives up first. A row lock an OLTP write holds is released well within it.
ROW_LOCK_WAIT = dt.timedelta(milliseconds=20)
LOCKING_WINDOWS = 10  # after a window waited on a lock, this many lock first (the app is busy there)
SWEEP_FIND_LIMIT = 10_000  # matching keys read per sweep round
SWEEP_CHUNK = 1_000  # of which this many are fixed per sweep transaction
SWEEP_WAIT = 0.05  # seconds before a sweep round looks again at rows it found locked, doubled per stall
SWEEP_WAIT_MAX = 2.0
STOP_CHECK_EVERY = 1.0  # seconds between two reads of the migration's phase
STOPPING_PHASES = {"rolling_back": "rolling back", "rolled_back": "rolled back"}


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
        self._last: Key | None = None  # the checkpoint the walk holds at, for a stop during a hold
        if hold is not None:
            hold.interrupt = lambda: self.check_stop(self._last)
            hold.on_hold = lambda why: ledger.note_hold(conn, migration_id, spec.step, part, why)
        self.swept = 0
        self.splits = 0
        self.locking_windows = 0  # windows run locking first, because a window waited on a row lock
        self._lock_first = 0
        self._phase_read_at = -math.inf

    def check_stop(self, last: Key | None) -> None:
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
        where = self._after(last) if self.progress.batches else "before its first batch"
        self.log.warning("%s: the migration is %s; stopping %s", self.progress.label, record.phase, where)
        raise BackfillStoppedError(
            f"{self.progress.label}: stopped {where} with {self.progress.rows_done:,} rows done: "
            f"migration {self.migration_id!r} is {STOPPING_PHASES[record.phase]}"
        )

    def _refuse_unfinished(self, key: Any) -> None:
        if key is not None:
            raise BackfillInputError(
                "set",
                f"after SET {self.spec.set} the row with key {show_key(read_key(key) or ())} still matches "
                f"where {self.spec.where!r}: "
                "set must make where false, or the backfill never ends (exclude such rows in where, "
                "e.g. 'AND title IS NOT NULL'); this batch was rolled back",
            )

    def _checkpoint(self, cur: psycopg.Cursor[Any], last_key: Key | None, rows: int) -> None:
        self.ledger.checkpoint(
            cur,
            self.migration_id,
            self.spec.step,
            self.part,
            last_key=self.target.encode(last_key),
            rows_added=rows,
            batch_size=self.sizer.size,
        )

    def _batch(
        self, cur: psycopg.Cursor[Any], statement: sql.Composed, params: dict[str, Any], upper: Key
    ) -> tuple[Key | None, int]:
        """One window, checkpointed in its own transaction: (its last key, None if it ran to the range's
        end; rows updated)."""
        cur.execute(statement, params)
        row = cur.fetchone()
        assert row is not None
        upto, updated, unfinished = read_key(row[0]), int(row[1]), row[2]
        self._refuse_unfinished(unfinished)
        self._last = upto if upto is not None else upper
        with self.conn.pipeline():  # the checkpoint and the pacer's probe in one round trip, locks held
            self._checkpoint(cur, self._last, updated)
            self.pacer.probe(cur, updated)
        return upto, updated

    def _fix(self, cur: psycopg.Cursor[Any], keys: list[Key], last: Key | None) -> int:
        """Sweep: update those of ``keys`` that still match and are not locked; returns how many."""
        params: dict[str, Any] = {}
        for i, key in enumerate(keys):
            params.update(self.target.bind(f"k{i}", key))
        cur.execute(fix_sql(self.target, len(keys)), params)
        row = cur.fetchone()
        assert row is not None
        self._refuse_unfinished(row[1])
        self._checkpoint(cur, last, int(row[0]))
        return int(row[0])

    def _what(self, rows: int, start: str) -> str:
        """A batch, named in its errors and logs: the partition, the table and where it starts."""
        return f"{self.progress.label}: the batch of up to {rows:,} rows of {self.target.label} {start}"

    @staticmethod
    def _after(key: Key | None) -> str:
        return f"after key {show_key(key)}" if key is not None else "from the range's start"

    def _split(self, rows: int, start: str, failed: BatchSplit, single_key: Callable[[], str]) -> int:
        """The size to retry a failed batch of ``rows`` with (half); a single row cannot be split, so its
        failure names its key: too slow for the timeout, or ``set`` raising on its data."""
        timeout = self.spec.batch_statement_timeout
        if rows <= 1:
            key = single_key()
            if isinstance(failed, BatchRowFailed):
                raise BackfillRowError(
                    f"{self.progress.label}: SET {self.spec.set} fails on the row of {self.target.label} with "
                    f"key {key}: {failed.detail}; fix that row (or make set handle it) and re-run, the rows "
                    "before it are done",
                    failed.error.sqlstate,
                    key,
                ) from failed.error
            raise BackfillRowTimeoutError(
                f"{self.progress.label}: updating the row of {self.target.label} with key {key} "
                f"alone takes longer than the batch statement_timeout ({timeout}): make set cheaper for "
                "it, or backfill that row by hand and re-run"
            ) from failed
        half = rows // 2
        self.splits += 1
        if isinstance(failed, BatchRowFailed):
            self.log.warning(
                "%s failed on a row (%s); narrowing down: retrying %s rows",
                self._what(rows, start),
                failed.detail,
                f"{half:,}",
            )
        else:
            self.log.warning(
                "%s hit statement_timeout (%s) after %.2fs; split: retrying %s rows",
                self._what(rows, start),
                timeout,
                failed.seconds,
                f"{half:,}",
            )
        return half

    def _next_key(self, after: Key | None, upper: Key) -> str:
        """The first key of the range after ``after``: the one row of a one-row window (for messages)."""
        window, params = self.target.range_condition(after, upper)
        row = self.conn.execute(
            # Aliased, so that ORDER BY sorts the key itself, not its text form.
            sql.SQL(
                "SELECT {texts} FROM (SELECT {aliased} FROM {t} WHERE {w} ORDER BY {o} LIMIT 1) s"
            ).format(
                texts=self.target.texts("s"),
                aliased=self.target.aliased(),
                t=self.target.table,
                w=window,
                o=self.target.order(),
            ),
            params,
        ).fetchone()
        return show_key(read_key(row) or ()) if row else "(gone)"

    def _last_key(self) -> Key | None:
        """Today's last key of the table (None when it is empty)."""
        row = self.conn.execute(
            sql.SQL("SELECT {texts} FROM (SELECT {aliased} FROM {t} ORDER BY {o} LIMIT 1) s").format(
                texts=self.target.texts("s"),
                aliased=self.target.aliased(),
                t=self.target.table,
                o=self.target.order(descending=True),
            )
        ).fetchone()
        return read_key(row)

    def main_pass(self, last: Key | None) -> Key | None:
        """Walk ``(last, upper]`` in windows of the batch size; returns the final checkpoint key."""
        upper = self.key_range.upper
        if upper is None:  # the open end: stop at today's last key; later rows are the sweep's
            upper = self._last_key()
            if upper is None:
                return last
        statements = {
            (has, locking): batch_sql(self.target, has, skip_locked=locking)
            for has in (False, True)
            for locking in (False, True)
        }
        # A timed-out window is done as its two halves (each split again if it times out too), in order,
        # before the sizer picks window sizes again: only the slow stretch is walked in small windows.
        pending: list[int] = []
        while True:
            self.check_stop(last)
            size = pending[0] if pending else self.sizer.size
            params = {**self.target.bind("lower", last), **self.target.bind("upper", upper), "skip": size - 1}
            started = time.monotonic()
            try:
                upto, updated = self._window(
                    self._what(size, self._after(last)), statements, last, params, upper
                )
            except BatchSplit as failed:
                one_key = functools.partial(self._next_key, last, upper)
                half = self._split(size, self._after(last), failed, one_key)
                pending[:1] = [half, size - half]
                if isinstance(failed, BatchTimedOut):
                    self.sizer.observe(size, failed.seconds)
                continue
            if pending:
                pending.pop(0)
            seconds = time.monotonic() - started
            self.progress.batch(updated, size)
            self.pacer.after_batch(self.conn, size, seconds, updated)
            if upto is None:  # that window ran to the end of the range
                return upper
            last = upto

    def _window(
        self,
        what: str,
        statements: dict[tuple[bool, bool], sql.Composed],
        last: Key | None,
        params: dict[str, Any],
        upper: Key,
    ) -> tuple[Key | None, int]:
        """One window: the plain UPDATE under ``ROW_LOCK_WAIT``; if it waited that long on a lock, the
        window again skipping locked rows, and so the next ``LOCKING_WINDOWS`` windows."""
        has_lower = last is not None
        if not self._lock_first:
            try:
                return self.batches.run(
                    what, self._batch, statements[has_lower, False], params, upper, lock_wait=ROW_LOCK_WAIT
                )
            except BatchRowsLocked as locked:
                self.log.info(
                    "%s waited %s on a lock (%s): again skipping locked rows, and so the next %d windows",
                    what,
                    f"{ROW_LOCK_WAIT.total_seconds() * 1000:.0f} ms",
                    locked,
                    LOCKING_WINDOWS,
                )
                self._lock_first = LOCKING_WINDOWS + 1
        self._lock_first -= 1
        self.locking_windows += 1
        return self.batches.run(what, self._batch, statements[has_lower, True], params, upper)

    def _fix_keys(self, keys: list[Key], last: Key | None) -> int:
        """Sweep ``keys`` in one transaction, or in halves (recursively) when that fails on a row or hits
        the timeout."""
        self.check_stop(last)
        start = f"in the sweep from key {show_key(keys[0])}"
        try:
            return self.batches.run(self._what(len(keys), start), self._fix, keys, last)
        except BatchSplit as failed:
            half = self._split(len(keys), start, failed, lambda: show_key(keys[0]))
            return self._fix_keys(keys[:half], last) + self._fix_keys(keys[half:], last)

    def sweep(self, last: Key | None) -> None:
        """Fix rows of the range that still match ``where`` until a read finds none.

        A round makes progress when it finds fewer matching rows than every round before it (the backlog
        shrinks); ``max_sweep_rounds`` bounds only the rounds that do not, so a long tail of rows the
        application held locked is worked off, while rows that keep appearing stop the sweep. A round that
        found locked rows waits before the next, longer after each round without progress.
        """
        window, params = self.target.range_condition(self.key_range.lower, self.key_range.upper)
        find = sql.SQL("SELECT {texts} FROM {t} WHERE {r} AND ({w}) LIMIT %(n)s").format(
            texts=self.target.texts(), t=self.target.table, r=window, w=self.target.where_sql
        )
        params["n"] = SWEEP_FIND_LIMIT
        fewest = math.inf
        stalled = rounds = 0
        while True:
            keys = [read_key(r) or () for r in self.conn.execute(find, params).fetchall()]
            if not keys:
                return
            if len(keys) < fewest:
                fewest = len(keys)
            else:
                stalled += 1
            if stalled >= self.spec.max_sweep_rounds:
                raise BackfillSweepError(
                    f"{self.progress.label}: rows keep matching where {self.spec.where!r} after "
                    f"{stalled} sweep rounds without progress ({rounds} rounds in all; {len(keys):,} found in "
                    f"the last, e.g. key {show_key(keys[0])}): something keeps writing such rows, or holds "
                    "them locked. Is the sync trigger of the expand phase in place, is all code that writes "
                    "this table the new version, and is no session holding these rows?"
                )
            rounds += 1
            fixed = 0
            for start in range(0, len(keys), SWEEP_CHUNK):
                fixed += self._fix_keys(keys[start : start + SWEEP_CHUNK], last)
            self.swept += fixed
            self.progress.batch(fixed, self.sizer.size)
            self.log.info(
                "%s: sweep round %d: %s rows still matched where, %s fixed%s",
                self.progress.label,
                rounds,
                f"{len(keys):,}",
                f"{fixed:,}",
                "" if fixed == len(keys) else " (the others were locked or changed; looking again)",
            )
            if fixed < len(keys):
                backoff = min(SWEEP_WAIT * 2**stalled, SWEEP_WAIT_MAX)
                self.sleep(max(self.spec.pause.total_seconds(), backoff))
