"""The DDL runner: a phase's SQL file applied so that it never queues the application behind a lock.

Every try sets ``lock_timeout`` and gives up quickly; a lock timeout (SQLSTATE 55P03, or a deadlock,
40P01) retries the whole group with exponential backoff and full jitter. Statements run in one transaction
per contiguous group; ``CONCURRENTLY`` statements run alone in autocommit. The migration's advisory lock
and the ledger writes live on a control connection, the DDL on a second one.

Each committed group is checkpointed in the ledger (step ``<phase>``, part 0: ``rows_done`` = statements
applied, ``last_key`` = ``"<groups done>:<digest>"``), inside the group's own transaction when it has one,
so a retried task skips what is applied; it refuses to resume if those statements changed, or if a
rollback ran since (the DAG's ``begin`` task resets the ledger to start over).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import psycopg
import psycopg.errors
from pglast import ast
from psycopg import sql
from psycopg.rows import tuple_row

from .database import Connector, backend_pid
from .ddl_inspect import IndexName, index_names, invalid_indexes, lock_holders, stale_build
from .ddl_plan import Group, Plan, plan_phase
from .index_progress import StatementMonitor
from .ledger import Ledger, StepRecord
from .lifecycle import Event, Lifecycle
from .lock import migration_lock
from .statements import Statement

ROLLBACK_STEP = "rollback"  # once it has run, the other phases' checkpoints are stale

# The lifecycle events of each SQL phase: when it starts and when it succeeds.
PHASE_EVENTS: dict[str, tuple[Event, Event]] = {
    "expand": (Event.EXPAND_STARTED, Event.EXPANDED),
    "contract": (Event.CONTRACT_STARTED, Event.CONTRACTED),
    "rollback": (Event.ROLLBACK_STARTED, Event.ROLLED_BACK),
}


class DDLStatementError(RuntimeError):
    """A statement failed; its group was rolled back (an autocommit one cleaned up). Starts with ``file:line``."""

    def __init__(self, statement: Statement, message: str, sqlstate: str | None = None) -> None:
        super().__init__(f"{statement.where}: {message}")
        self.statement = statement
        self.sqlstate = sqlstate


class LockRetriesExhaustedError(DDLStatementError):
    """Every try timed out waiting for a lock: something holds the table for longer than we may wait."""


class StaleCheckpointError(RuntimeError):
    """The ledger's checkpoint of a phase was overtaken by a rollback: resuming from it would skip work."""


class _BuildLockWaitCancelled(psycopg.errors.LockNotAvailable):
    """A watched index build cancelled because its wait for a table lock reached ``lock_timeout``."""


PROGRESS_INTERVAL = timedelta(seconds=5)


@dataclass(frozen=True)
class DDLPolicy:
    """How patient the runner is with locks; all durations are ``timedelta``."""

    lock_timeout: timedelta
    retries: int
    statement_timeout: timedelta | None = None  # None: keep the session's default
    backoff_base: timedelta = timedelta(milliseconds=200)
    backoff_max: timedelta = timedelta(seconds=30)
    migration_lock_wait: timedelta = timedelta(seconds=60)  # wait this long for another holder to end

    def __post_init__(self) -> None:
        if self.lock_timeout <= timedelta(0):
            raise ValueError(f"lock_timeout must be positive, got {self.lock_timeout}")
        if self.retries < 0:
            raise ValueError(f"ddl_retries must be >= 0, got {self.retries}")
        if self.statement_timeout is not None and self.statement_timeout <= timedelta(0):
            raise ValueError(f"statement_timeout must be positive, got {self.statement_timeout}")
        if self.backoff_base <= timedelta(0) or self.backoff_max < self.backoff_base:
            raise ValueError("backoff_base must be positive and not above backoff_max")

    def backoff(self, attempt: int) -> timedelta:
        """Full jitter: uniform in [0, min(max, base * 2**(attempt-1))], so retriers do not stampede."""
        cap = min(self.backoff_max, self.backoff_base * (2 ** max(attempt - 1, 0)))
        return timedelta(seconds=random.uniform(0.0, cap.total_seconds()))


@dataclass(frozen=True)
class LockRetry:
    """One try that timed out on a lock: what waited, how long, and how long we backed off."""

    group: int
    attempt: int
    where: str
    waited: timedelta
    backoff: timedelta
    blockers: str


@dataclass(frozen=True)
class PhaseResult:
    """What a run of a phase did."""

    step: str
    groups: int
    applied: int  # groups run by this call
    skipped: int  # groups an earlier try had already applied
    retries: tuple[LockRetry, ...] = field(default=())
    dry_run: bool = False

    def summary(self) -> dict[str, object]:
        """A JSON-friendly digest (the operator's XCom)."""
        return {
            "step": self.step,
            "groups": self.groups,
            "applied": self.applied,
            "skipped": self.skipped,
            "lock_retries": len(self.retries),
            "dry_run": self.dry_run,
        }


def _ms(d: timedelta) -> str:
    return f"{max(int(d.total_seconds() * 1000), 1)}ms"


class _Runner:
    """Runs the groups of one phase on a dedicated DDL connection; the control connection keeps the ledger."""

    def __init__(
        self,
        ddl: psycopg.Connection,
        control: psycopg.Connection,
        *,
        migration_id: str,
        step: str,
        policy: DDLPolicy,
        ledger: Ledger,
        log: logging.Logger,
        plan: Plan,
    ) -> None:
        self.ddl, self.control = ddl, control
        self.migration_id, self.step, self.policy = migration_id, step, policy
        self.ledger, self.log, self.plan = ledger, log, plan
        self.retries: list[LockRetry] = []
        self.leftovers: set[IndexName] = set()  # invalid indexes our failed tries left behind
        self.current: Statement | None = None  # the file's statement being applied, for errors
        self.running = ""  # the SQL on the wire: the statement, or the drop of an invalid leftover
        self.started = time.monotonic()
        self.before: set[IndexName] = set()  # invalid indexes there before this try's statement

    def _set(self, name: str, value: str, *, local: bool) -> None:
        self.ddl.execute("SELECT set_config(%s, %s, %s)", (name, value, local))

    def _timeouts(self, *, local: bool) -> None:
        self._set("lock_timeout", _ms(self.policy.lock_timeout), local=local)
        if self.policy.statement_timeout is not None:
            self._set("statement_timeout", _ms(self.policy.statement_timeout), local=local)

    def _checkpoint(self, cur: psycopg.Cursor[tuple[object, ...]], group: Group) -> None:
        self.ledger.checkpoint(
            cur,
            self.migration_id,
            self.step,
            0,
            last_key=self.plan.checkpoint_key(group.number),
            rows_added=len(group.statements),
        )

    def _try(self, group: Group) -> None:
        """One try of ``group``; raises what the server raised, with ``self.current`` set."""
        if group.autocommit:
            self._drop_leftovers()
            (stmt,) = group.statements
            self.before = invalid_indexes(self.ddl, stmt)
            self._timeouts(local=False)
            self.current, self.running, self.started = stmt, stmt.sql, time.monotonic()
            if isinstance(stmt.node, ast.IndexStmt | ast.ReindexStmt):
                self._watched_build(stmt)
            else:
                self.ddl.execute(stmt.sql)
            with self.control.transaction(), self.control.cursor() as cur:
                self._checkpoint(cur, group)
            return
        with self.ddl.transaction(), self.ddl.cursor() as cur:
            self._timeouts(local=True)
            for stmt in group.statements:
                self.current, self.running, self.started = stmt, stmt.sql, time.monotonic()
                cur.execute(stmt.sql)
            self._checkpoint(cur, group)

    def _watched_build(self, stmt: Statement) -> None:
        """A concurrent index build. PostgreSQL applies ``lock_timeout`` to its waits for older transactions
        too, so any app transaction longer than it would fail every try; the build runs without it, and a
        monitor on the control connection cancels it only when a *table* lock wait reaches ``lock_timeout``
        (and logs ``pg_stat_progress_create_index`` meanwhile)."""
        self._set("lock_timeout", "0", local=False)
        monitor = StatementMonitor(
            self.control,
            backend_pid(self.ddl),
            label=stmt.where,
            lock_timeout=self.policy.lock_timeout,
            progress_interval=PROGRESS_INTERVAL,
            log=self.log,
        )
        try:
            with monitor:
                self.ddl.execute(stmt.sql)
        except psycopg.errors.QueryCanceled as exc:
            if not monitor.cancelled_for_lock:
                raise
            raise _BuildLockWaitCancelled(
                f"table lock not granted within lock_timeout; {monitor.blockers}"
            ) from exc
        finally:
            if not self.ddl.closed and not self.ddl.broken:
                self._set("lock_timeout", _ms(self.policy.lock_timeout), local=False)

    def _drop_leftovers(self) -> None:
        """Drop the invalid indexes a failed try left, so the next try can build under the same name."""
        for schema, name in sorted(self.leftovers):
            self._set("lock_timeout", _ms(self.policy.lock_timeout), local=False)
            drop = sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(schema, name))
            self.running, self.started = drop.as_string(self.ddl), time.monotonic()
            self.ddl.execute(drop)
            self.log.info("dropped invalid index %s.%s left by a failed build", schema, name)
            self.leftovers.discard((schema, name))

    def run(self, group: Group) -> None:
        """Apply ``group``, retrying the whole of it on lock timeouts; other errors raise at once."""
        if group.autocommit:
            self.leftovers |= stale_build(self.ddl, group.statements[0])
        attempt = 0
        while True:
            attempt += 1
            self.current, self.started = group.statements[0], time.monotonic()
            self.before = set()
            try:
                self._try(group)
                return
            except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected) as exc:
                waited = timedelta(seconds=time.monotonic() - self.started)
                stmt = self.current or group.statements[0]
                if group.autocommit:  # a build that timed out waiting for old snapshots leaves an index
                    self.leftovers |= invalid_indexes(self.ddl, stmt) - self.before
                blockers = lock_holders(self.ddl, stmt)
                if attempt > self.policy.retries:
                    raise LockRetriesExhaustedError(
                        stmt,
                        f"gave up after {attempt} tries, each waiting {_ms(self.policy.lock_timeout)} "
                        f"(lock_timeout) for a lock; {blockers}. End the blocking transaction or raise "
                        "ddl_retries/lock_timeout, then retry (applied groups are skipped)",
                        exc.sqlstate,
                    ) from exc
                pause = self.policy.backoff(attempt)
                self.retries.append(LockRetry(group.number, attempt, stmt.where, waited, pause, blockers))
                self.log.warning(
                    "%s: %s after %.0f ms (try %d of %d, %s); retrying in %.0f ms; %s: %s",
                    stmt.where,
                    "deadlock" if isinstance(exc, psycopg.errors.DeadlockDetected) else "lock not available",
                    waited.total_seconds() * 1000,
                    attempt,
                    self.policy.retries + 1,
                    group.mode,
                    pause.total_seconds() * 1000,
                    blockers,
                    _short(self.running),
                )
                time.sleep(pause.total_seconds())
            except psycopg.Error as exc:
                stmt = self.current or group.statements[0]
                note = (
                    f"{group.mode} was rolled back: none of its {len(group.statements)} statement(s) applied"
                )
                if group.autocommit:
                    note = self._clean_up_after(stmt)
                diag = exc.diag.message_primary or str(exc).strip()
                raise DDLStatementError(
                    stmt, f"{_short(stmt.sql)!r} failed [{exc.sqlstate}]: {diag} ({note})", exc.sqlstate
                ) from exc

    def _clean_up_after(self, stmt: Statement) -> str:
        """Drop an invalid index the failed autocommit statement left, so nothing stays half-applied."""
        if self.ddl.broken or self.ddl.closed:
            return "ran in autocommit; the connection was lost"
        try:
            left = invalid_indexes(self.ddl, stmt) - self.before
            self.leftovers |= left
            if not left:
                return "ran in autocommit"
            self._drop_leftovers()
            return f"ran in autocommit; dropped the invalid index it left: {index_names(left)}"
        except psycopg.Error as exc:
            return f"ran in autocommit; it left invalid index(es) {index_names(self.leftovers)}: {exc}"


def _short(text: str, limit: int = 120) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


@contextmanager
def _session(connect: Connector, application_name: str) -> Iterator[psycopg.Connection]:
    """A fresh autocommit connection; its backend stops soon after our process dies (PG 14+)."""
    with closing(connect()) as conn:
        conn.autocommit = True
        conn.row_factory = tuple_row
        conn.execute("SELECT set_config('application_name', %s, false)", (application_name[:63],))
        if conn.info.server_version >= 140000:
            conn.execute("SELECT set_config('client_connection_check_interval', '1s', false)")
        yield conn


def run_phase(
    connect: Connector,
    statements: Sequence[Statement],
    *,
    migration_id: str,
    step: str,
    policy: DDLPolicy,
    ledger: Ledger,
    log: logging.Logger,
    events: tuple[Event, Event] | None = None,
    dry_run: bool = False,
    dag_id: str | None = None,
    run_id: str | None = None,
) -> PhaseResult:
    """Apply ``statements`` as step ``step`` of ``migration_id``, under the migration's advisory lock.

    Resumes after the last group the ledger records as applied; a phase already complete is a no-op, and so
    is the expand once the contract has started (forward-only). ``events`` move the migration's lifecycle
    when the phase starts and when it succeeds; their guards run before any statement. A failure is
    recorded through the lifecycle (the step failed, and ``failed`` unless forward-only or transient).
    """
    plan = plan_phase(statements)
    groups = plan.groups
    if dry_run:
        return _dry_run(connect, plan, migration_id=migration_id, step=step, ledger=ledger, log=log)
    name = f"airflow-expand:{migration_id}:{step}"
    with _session(connect, name) as control:
        wait = policy.migration_lock_wait.total_seconds()
        with migration_lock(control, migration_id, wait_seconds=wait):
            ledger.ensure(control)
            lifecycle = Lifecycle(ledger)
            migration = ledger.get(control, migration_id)
            if step == "expand" and (reason := lifecycle.noop_reason(migration, step)):
                log.info(reason)
                return PhaseResult(step, len(groups), 0, len(groups))
            record, done = _applied(control, ledger, plan, migration_id, step)
            if record is not None and record.status == "success" and done == len(groups):
                log.info("%s of %s already completed (%d groups): nothing to do", step, migration_id, done)
                return PhaseResult(step, len(groups), 0, done)
            if events:
                lifecycle.move(control, migration_id, events[0], dag_id=dag_id, run_id=run_id)
            ledger.start_step(control, migration_id, step, rows_total=plan.statement_count)
            if done:
                log.info("resuming %s: groups 1-%d were applied by an earlier try", step, done)
            retries: list[LockRetry] = []
            try:
                with _session(connect, name) as ddl:
                    ddl.add_notice_handler(lambda d: log.info("server notice: %s", d.message_primary))
                    runner = _Runner(
                        ddl,
                        control,
                        migration_id=migration_id,
                        step=step,
                        policy=policy,
                        ledger=ledger,
                        log=log,
                        plan=plan,
                    )
                    retries = runner.retries
                    for group in groups[done:]:
                        began = time.monotonic()
                        runner.run(group)
                        log.info(
                            "%s: group %d/%d applied (%s, %d statement(s), %.2f s)",
                            step,
                            group.number,
                            len(groups),
                            group.mode,
                            len(group.statements),
                            time.monotonic() - began,
                        )
            except BaseException as exc:
                lifecycle.record_failure(connect, migration_id, step, exc, log)
                raise
            ledger.finish_step(control, migration_id, step, rows_total=plan.statement_count)
            if events:
                lifecycle.move(control, migration_id, events[1], dag_id=dag_id, run_id=run_id)
            log.info(
                "%s of %s completed: %d group(s) applied now, %d earlier",
                step,
                migration_id,
                len(groups) - done,
                done,
            )
            return PhaseResult(step, len(groups), len(groups) - done, done, tuple(retries))


def _applied(
    conn: psycopg.Connection, ledger: Ledger, plan: Plan, migration_id: str, step: str
) -> tuple[StepRecord | None, int]:
    """The step's ledger record and how many of its groups are applied, if that can still be trusted."""
    record = ledger.step(conn, migration_id, step)
    if record is not None and step != ROLLBACK_STEP and ledger.step(conn, migration_id, ROLLBACK_STEP):
        raise StaleCheckpointError(
            f"migration {migration_id!r}: a rollback ran after the earlier try of {step}, so {step}'s "
            "checkpoint no longer describes the schema; start the migration over (reset its ledger: "
            "the DAG's begin task does this after a rollback)"
        )
    return record, plan.resume_point(record.last_key if record else None)


def _dry_run(
    connect: Connector,
    plan: Plan,
    *,
    migration_id: str,
    step: str,
    ledger: Ledger,
    log: logging.Logger,
) -> PhaseResult:
    """Log the plan (and what the ledger says is applied) without taking a lock or writing anything."""
    done = 0
    with closing(connect()) as conn:
        conn.autocommit = True
        if ledger.installed(conn):
            done = _applied(conn, ledger, plan, migration_id, step)[1]
    groups = plan.groups
    for group in groups:
        state = "already applied, would skip" if group.number <= done else "would run"
        log.info("[dry run] %s group %d/%d (%s): %s", step, group.number, len(groups), group.mode, state)
        for stmt in group.statements:
            log.info("[dry run]   %s [%s] %s", stmt.where, group.mode, _short(stmt.sql, 200))
    log.info("[dry run] %s of %s: nothing was changed", step, migration_id)
    return PhaseResult(step, len(groups), 0, done, dry_run=True)
