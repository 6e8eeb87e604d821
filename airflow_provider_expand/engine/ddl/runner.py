"""How the DDL runner applies one group of a phase: its session, its timeouts, its lock retries.

Before every statement the runner re-asserts its ``lock_timeout``, ``statement_timeout`` and
``idle_in_transaction_session_timeout``, so a statement of the file that switched one off (lint EX801,
suppressed) cannot take that protection from the statements after it. ``CONCURRENTLY`` statements that
wait for other transactions (index builds, ``DROP INDEX``, ``DETACH PARTITION``) run watched: without
``lock_timeout`` on those waits, which block nobody, but cancelled when a *table* lock wait reaches it.
Autocommit statements are made safe to run again by ``ddl.resume``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import timedelta

import psycopg
import psycopg.errors
from pglast import ast
from psycopg import sql
from psycopg.rows import tuple_row

from airflow_provider_expand.engine.database import (
    IDLE_IN_TRANSACTION_TIMEOUT,
    Connector,
    backend_pid,
    configure_session,
    ms,
)
from airflow_provider_expand.engine.ddl.errors import statement_error
from airflow_provider_expand.engine.ddl.inspect import (
    IndexName,
    index_names,
    invalid_indexes,
    lock_holders,
    stale_build,
)
from airflow_provider_expand.engine.ddl.plan import Group, Plan
from airflow_provider_expand.engine.ddl.resume import apply_alone
from airflow_provider_expand.engine.ddl.retry import LockRetriesExhaustedError, LockRetryPolicy
from airflow_provider_expand.engine.index.progress import StatementMonitor
from airflow_provider_expand.engine.ledger.store import Ledger
from airflow_provider_expand.engine.statements import Statement

PROGRESS_INTERVAL = timedelta(seconds=5)


class _LockWaitCancelled(psycopg.errors.LockNotAvailable):
    """A watched statement cancelled because its wait for a table lock reached ``lock_timeout``."""

    def __init__(self, blockers: str) -> None:
        super().__init__(f"table lock not granted within lock_timeout; {blockers}")
        self.blockers = blockers  # who held it, as the monitor saw them (the statement may name no table)


@dataclass(frozen=True, kw_only=True)
class DDLPolicy(LockRetryPolicy):
    """The lock-retry policy of a phase, with the DDL session's own timeouts."""

    statement_timeout: timedelta | None = None  # None: keep the session's default
    migration_lock_wait: timedelta = timedelta(seconds=60)  # wait this long for another holder to end
    idle_in_transaction_timeout: timedelta = IDLE_IN_TRANSACTION_TIMEOUT  # a frozen worker lets go after it

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.statement_timeout is not None and self.statement_timeout <= timedelta(0):
            raise ValueError(f"statement_timeout must be positive, got {self.statement_timeout}")
        if self.idle_in_transaction_timeout <= timedelta(0):
            raise ValueError("idle_in_transaction_timeout must be positive")


@dataclass(frozen=True)
class LockRetry:
    """One try that timed out on a lock: what waited, how long, and how long we backed off."""

    group: int
    attempt: int
    where: str
    waited: timedelta
    backoff: timedelta
    blockers: str


def _builds(stmt: Statement) -> bool:
    return isinstance(stmt.node, ast.IndexStmt | ast.ReindexStmt) and stmt.concurrently


class Runner:
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
        self.before: set[IndexName] | None = None  # invalid indexes before this try's build (None: unknown)
        self.settings = self._settings()

    def _settings(self) -> dict[str, str]:
        """What :meth:`assert_settings` restores: the policy's, or the session's own statement_timeout."""
        row = self.ddl.execute("SELECT current_setting('statement_timeout')").fetchone()
        statement_timeout = self.policy.statement_timeout
        return {
            "lock_timeout": ms(self.policy.lock_timeout),
            "statement_timeout": ms(statement_timeout) if statement_timeout else str(row[0] if row else 0),
            "idle_in_transaction_session_timeout": ms(self.policy.idle_in_transaction_timeout),
        }

    def assert_settings(self, *, local: bool) -> None:
        """Re-assert the runner's timeouts (one round trip), whatever an earlier statement set."""
        self.ddl.execute(
            "SELECT set_config(n, v, %s) FROM unnest(%s::text[], %s::text[]) AS s(n, v)",
            (local, list(self.settings), list(self.settings.values())),
        )

    def _set_lock_timeout(self, value: str) -> None:
        self.ddl.execute("SELECT set_config('lock_timeout', %s, false)", (value,))

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
            (stmt,) = group.statements
            self.current = stmt
            self.drop_leftovers()
            self.before = invalid_indexes(self.ddl, stmt) if _builds(stmt) else None
            self.assert_settings(local=False)
            self._apply_alone(stmt)
            with self.control.transaction(), self.control.cursor() as cur:
                self._checkpoint(cur, group)
            return
        with self.ddl.transaction(), self.ddl.cursor() as cur:
            for stmt in group.statements:
                self.current, self.running, self.started = stmt, stmt.sql, time.monotonic()
                self.assert_settings(local=True)
                cur.execute(stmt.sql)
            self._checkpoint(cur, group)

    def _apply_alone(self, stmt: Statement) -> None:
        """An autocommit statement, made safe to run again (see ``ddl.resume``)."""
        apply_alone(self, stmt)

    def run_alone(self, statement: str | sql.Composed, label: str, *, watched: bool) -> None:
        """Run ``statement`` in autocommit; ``watched`` when it waits for other transactions to end."""
        self.running = statement if isinstance(statement, str) else statement.as_string(self.ddl)
        self.started = time.monotonic()
        if watched:
            self._watched(statement, label)
        else:
            self.ddl.execute(statement)

    def _watched(self, statement: str | sql.Composed, label: str) -> None:
        """PostgreSQL applies ``lock_timeout`` to a concurrent statement's waits for older transactions too,
        so any app transaction longer than it would fail every try; the statement runs without it, and a
        monitor on the control connection cancels it only when a *table* lock wait reaches ``lock_timeout``
        (and logs ``pg_stat_progress_create_index`` of a build meanwhile)."""
        self._set_lock_timeout("0")
        monitor = StatementMonitor(
            self.control,
            backend_pid(self.ddl),
            label=label,
            lock_timeout=self.policy.lock_timeout,
            progress_interval=PROGRESS_INTERVAL,
            log=self.log,
        )
        try:
            with monitor:
                self.ddl.execute(statement)
        except psycopg.errors.QueryCanceled as exc:
            if not monitor.cancelled_for_lock:
                raise
            raise _LockWaitCancelled(monitor.blockers) from exc
        finally:
            if not self.ddl.closed and not self.ddl.broken:
                self._set_lock_timeout(self.settings["lock_timeout"])

    def drop_leftovers(self) -> None:
        """Drop the invalid indexes a failed try left, so the next try can build under the same name."""
        for schema, name in sorted(self.leftovers):
            drop = sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(schema, name))
            self.run_alone(drop, f"drop of {schema}.{name}", watched=True)
            self.log.info("dropped invalid index %s.%s left by a failed build", schema, name)
            self.leftovers.discard((schema, name))

    def _note_leftovers(self, stmt: Statement) -> None:
        """Remember the invalid indexes this try's build left (only when it was measured before)."""
        if self.before is not None and not self.ddl.broken and not self.ddl.closed:
            self.leftovers |= invalid_indexes(self.ddl, stmt) - self.before

    def run(self, group: Group) -> None:
        """Apply ``group``, retrying the whole of it on lock timeouts; other errors raise at once."""
        if group.autocommit:
            self.leftovers |= stale_build(self.ddl, group.statements[0])
        attempt = 0
        while True:
            attempt += 1
            self.current, self.started = group.statements[0], time.monotonic()
            self.before = None
            try:
                self._try(group)
                return
            except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected) as exc:
                waited = timedelta(seconds=time.monotonic() - self.started)
                stmt = self.current or group.statements[0]
                self._note_leftovers(stmt)  # a build that timed out leaves an index
                seen = exc.blockers if isinstance(exc, _LockWaitCancelled) else ""
                blockers = f"held by {seen}" if seen else lock_holders(self.ddl, stmt)
                if attempt > self.policy.retries:
                    raise LockRetriesExhaustedError(
                        f"{stmt.where}: gave up after {attempt} tries, each waiting {self.settings['lock_timeout']} "
                        f"(lock_timeout) for a lock; {blockers}. End the blocking transaction or raise "
                        "ddl_retries/lock_timeout, then retry (applied groups are skipped)",
                        exc.sqlstate,
                        tries=attempt,
                        statement=stmt,
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
                    short(self.running),
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
                raise statement_error(
                    stmt, f"{short(stmt.sql)!r} failed [{exc.sqlstate}]: {diag} ({note})", exc
                ) from exc

    def _clean_up_after(self, stmt: Statement) -> str:
        """Drop an invalid index the failed autocommit statement left, so nothing stays half-applied."""
        if self.ddl.broken or self.ddl.closed:
            return "ran in autocommit; the connection was lost"
        try:
            before = set(self.leftovers)
            self._note_leftovers(stmt)
            left = self.leftovers - before
            if not left:
                return "ran in autocommit"
            self.drop_leftovers()
            return f"ran in autocommit; dropped the invalid index it left: {index_names(left)}"
        except psycopg.Error as exc:
            return f"ran in autocommit; it left invalid index(es) {index_names(self.leftovers)}: {exc}"


def short(text: str, limit: int = 120) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


@contextmanager
def session(connect: Connector, application_name: str, policy: DDLPolicy) -> Iterator[psycopg.Connection]:
    """A fresh autocommit connection with the engine's session settings (its backend stops soon after our
    process dies or freezes: keepalives, client checks, ``idle_in_transaction_session_timeout``)."""
    with closing(connect()) as conn:
        conn.autocommit = True
        conn.row_factory = tuple_row
        configure_session(
            conn,
            application_name=application_name,
            idle_in_transaction_timeout=policy.idle_in_transaction_timeout,
        )
        yield conn
