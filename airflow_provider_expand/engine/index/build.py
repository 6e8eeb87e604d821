"""The index builder: ``CREATE INDEX CONCURRENTLY`` until a VALID index of the spec's definition exists.

A failed concurrent build leaves an INVALID index that ``IF NOT EXISTS`` would silently accept, and
that costs every write while serving no read. So the builder never uses ``IF NOT EXISTS``: it looks the
index up by its qualified name, drops an invalid one concurrently, builds, checks ``indisvalid`` again,
and gives up after ``max_rebuilds`` with the reason of the last failure, leaving no invalid index behind.
The contract phase gets the matching :func:`drop_index`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import psycopg
from psycopg import sql

from airflow_provider_expand.engine.database import Connector
from airflow_provider_expand.engine.ddl.retry import LockRetriesExhaustedError, LockRetryPolicy
from airflow_provider_expand.engine.index.concurrently import (
    retry_on_lock_timeout,
    run_concurrently,
    set_lock_timeout,
)
from airflow_provider_expand.engine.index.spec import (
    MAX_IDENTIFIER_BYTES,
    IndexSpec,
    IndexSpecError,
    ResolvedIndex,
    find_index,
    resolve_index,
)
from airflow_provider_expand.engine.ledger.lock import index_key, session_unlock, try_session_lock
from airflow_provider_expand.engine.ledger.store import DEFAULT_SCHEMA, Ledger
from airflow_provider_expand.engine.lifecycle import Lifecycle

__all__ = [
    "IndexBuildError",
    "IndexBusyError",
    "IndexDefinitionConflictError",
    "IndexResult",
    "IndexSpec",
    "IndexSpecError",
    "LockRetriesExhaustedError",
    "build_index",
    "drop_index",
]

Action = Literal["created", "rebuilt", "exists", "dropped", "absent", "dry_run"]


class IndexDefinitionConflictError(RuntimeError):
    """A valid index of that name exists but is not the index the spec describes."""


class IndexBuildError(RuntimeError):
    """Every allowed build failed; carries the reason PostgreSQL gave (e.g. the duplicated key)."""

    def __init__(self, index: str, builds: int, reason: str) -> None:
        super().__init__(
            f"index {index}: build failed {builds} time(s), giving up; last error: {reason}. "
            "No invalid index was left behind."
        )
        self.index = index
        self.builds = builds
        self.reason = reason


class IndexBusyError(RuntimeError):
    """Another session is building or dropping this index right now."""


@dataclass(frozen=True)
class IndexResult:
    """What the builder or the drop did; :meth:`as_dict` is what the operators return (XCom)."""

    index: str
    action: Action
    builds: int
    statements: tuple[str, ...]
    elapsed: timedelta

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "action": self.action,
            "builds": self.builds,
            "statements": list(self.statements),
            "elapsed_seconds": round(self.elapsed.total_seconds(), 3),
        }


def step_name(index: str) -> str:
    """The ledger step of building ``index``."""
    return f"index:{index}"


def drop_step_name(index: str) -> str:
    """The ledger step of dropping ``index`` (contract phase)."""
    return f"drop_index:{index}"


def _reason(exc: psycopg.Error) -> str:
    diag = exc.diag
    reason = diag.message_primary or str(exc)
    if diag.message_detail:
        reason += f" ({diag.message_detail.rstrip('.')})"
    return f"{reason} [SQLSTATE {exc.sqlstate}]" if exc.sqlstate else reason


@contextmanager
def _index_lock(conn: psycopg.Connection, qualified: str) -> Iterator[None]:
    """A session advisory lock per index, so two runs never build or drop the same index at once."""
    key = index_key(qualified)
    if not try_session_lock(conn, key):
        raise IndexBusyError(f"index {qualified} is being built or dropped by another run right now")
    try:
        yield
    finally:
        if not conn.closed and not conn.broken:
            session_unlock(conn, key)


def _fail_if_foreign_build(conn: psycopg.Connection, qualified: str, index_oid: int) -> None:
    row = conn.execute(
        "SELECT pid FROM pg_stat_progress_create_index WHERE index_relid = %s AND pid <> pg_backend_pid()",
        (index_oid,),
    ).fetchone()
    if row is not None:
        raise IndexBusyError(
            f"index {qualified} is invalid because backend pid {row[0]} is building it right now; "
            "wait for that build or cancel it, then run again"
        )


class _Builder:
    """One ``build_index`` call: two connections, the resolved spec and the retry policy."""

    def __init__(
        self,
        conn: psycopg.Connection,
        monitor_conn: psycopg.Connection,
        resolved: ResolvedIndex,
        *,
        policy: LockRetryPolicy,
        progress_interval: timedelta,
        log: logging.Logger,
    ) -> None:
        self.conn = conn
        self.monitor_conn = monitor_conn
        self.resolved = resolved
        self.policy = policy
        self.progress_interval = progress_interval
        self.log = log
        self.label = f"index {resolved.qualified_name}"
        self.statements: list[str] = []

    def _run(self, statement: sql.SQL | sql.Composed, *, cleanup: bool) -> None:
        self.statements.append(statement.as_string(self.conn))
        run_concurrently(
            self.conn,
            self.monitor_conn,
            statement,
            label=self.label,
            policy=self.policy,
            progress_interval=self.progress_interval,
            log=self.log,
            before_retry=self._drop_invalid if cleanup else None,
        )

    def _drop_invalid(self) -> None:
        """Drop the index if it exists and is invalid (what a failed or cancelled build leaves)."""
        existing = find_index(self.conn, self.resolved.schema, self.resolved.spec.name)
        if existing is not None and not existing.valid:
            _fail_if_foreign_build(self.conn, self.resolved.qualified_name, existing.oid)
            self.log.warning("%s is INVALID: dropping it concurrently", self.label)
            self._run(self.resolved.drop_statement(), cleanup=False)

    def converge(self, max_rebuilds: int) -> tuple[Action, int]:
        """Build until a valid index of the expected definition exists; return the action and builds."""
        resolved, builds, last_error, found_invalid = self.resolved, 0, "", False
        while True:
            existing = find_index(self.conn, resolved.schema, resolved.spec.name)
            if existing is not None and existing.valid:
                if existing.table_oid == resolved.table_oid and existing.signature == resolved.expected:
                    if builds == 0:
                        self.log.info("%s exists, is valid and matches the spec: nothing to do", self.label)
                        return "exists", 0
                    return ("rebuilt" if builds > 1 or found_invalid else "created"), builds
                raise IndexDefinitionConflictError(
                    f"{self.label} already exists with a different definition: "
                    f"{existing.signature.definition!r}; the spec asks for "
                    f"{resolved.create_statement().as_string(self.conn)!r}. Rename one of them or drop "
                    "the old index in a migration first"
                )
            if existing is not None:
                _fail_if_foreign_build(self.conn, resolved.qualified_name, existing.oid)
                origin = "by the failed build above" if builds else "by an earlier failed build"
                found_invalid = True
                self.log.warning("%s is INVALID (left %s): dropping it concurrently", self.label, origin)
                self._run(resolved.drop_statement(), cleanup=False)
            if builds > max_rebuilds:
                raise IndexBuildError(resolved.qualified_name, builds, last_error)
            builds += 1
            self.log.info(
                "%s: build %d of at most %d: %s",
                self.label,
                builds,
                max_rebuilds + 1,
                resolved.create_statement().as_string(self.conn),
            )
            started = time.monotonic()
            try:
                self._run(resolved.create_statement(), cleanup=True)
            except LockRetriesExhaustedError:
                raise
            except psycopg.Error as exc:
                last_error = _reason(exc)
                self.log.error("%s: build %d failed: %s", self.label, builds, last_error)
                continue
            self.log.info("%s: build %d finished in %.1f s", self.label, builds, time.monotonic() - started)


def _check_knobs(name: str, max_rebuilds: int, progress_interval: timedelta) -> None:
    if max_rebuilds < 0:
        raise IndexSpecError(name, "max_rebuilds", f"must be >= 0, got {max_rebuilds}")
    if progress_interval <= timedelta(0):
        raise IndexSpecError(name, "progress_interval", f"must be positive, got {progress_interval}")


def _policy(name: str, lock_timeout: timedelta, ddl_retries: int) -> LockRetryPolicy:
    try:
        return LockRetryPolicy.for_index(lock_timeout, ddl_retries)
    except ValueError as exc:
        field = "lock_timeout" if "lock_timeout" in str(exc) else "ddl_retries"
        raise IndexSpecError(name, field, str(exc)) from exc


def build_index(
    connect: Connector,
    spec: IndexSpec,
    *,
    migration_id: str,
    log: logging.Logger,
    max_rebuilds: int = 2,
    lock_timeout: timedelta = timedelta(seconds=2),
    ddl_retries: int = 20,
    progress_interval: timedelta = timedelta(seconds=5),
    dry_run: bool = False,
    ledger_schema: str = DEFAULT_SCHEMA,
) -> IndexResult:
    """Make sure a VALID index matching ``spec`` exists, building it concurrently if needed.

    Bad input raises :class:`IndexSpecError` before anything changes. ``dry_run`` logs the statements
    it would run and changes nothing (not even the ledger). The ledger step is ``index:<name>``.
    """
    _check_knobs(spec.name, max_rebuilds, progress_interval)
    policy = _policy(spec.name, lock_timeout, ddl_retries)
    started = time.monotonic()
    with closing(connect()) as conn:
        conn.autocommit = True
        set_lock_timeout(conn, policy.lock_timeout)
        resolved = retry_on_lock_timeout(
            lambda: resolve_index(conn, spec), label=f"index {spec.name}", policy=policy, log=log
        )
        if dry_run:
            return _plan(conn, resolved, log, started)
        ledger, step = Ledger(ledger_schema), step_name(spec.name)
        with _index_lock(conn, resolved.qualified_name), closing(connect()) as monitor_conn:
            monitor_conn.autocommit = True
            ledger.ensure(conn)
            ledger.start_step(conn, migration_id, step)
            builder = _Builder(
                conn, monitor_conn, resolved, policy=policy, progress_interval=progress_interval, log=log
            )
            try:
                action, builds = builder.converge(max_rebuilds)
            except Exception as exc:
                Lifecycle(ledger).record_failure(connect, migration_id, step, exc, log)
                raise
            ledger.finish_step(conn, migration_id, step, status="success")
    elapsed = timedelta(seconds=time.monotonic() - started)
    log.info("%s: %s, valid (%.1f s)", builder.label, action, elapsed.total_seconds())
    return IndexResult(resolved.qualified_name, action, builds, tuple(builder.statements), elapsed)


def _plan(
    conn: psycopg.Connection, resolved: ResolvedIndex, log: logging.Logger, started: float
) -> IndexResult:
    """The dry run: say what would be run, run nothing."""
    label = f"index {resolved.qualified_name}"
    existing = find_index(conn, resolved.schema, resolved.spec.name)
    planned: list[sql.Composed] = []
    if existing is not None and existing.valid:
        if existing.table_oid == resolved.table_oid and existing.signature == resolved.expected:
            log.info("dry run: %s exists, is valid and matches the spec: nothing to do", label)
        else:
            raise IndexDefinitionConflictError(
                f"{label} already exists with a different definition: {existing.signature.definition!r}"
            )
    else:
        if existing is not None:
            log.info("dry run: %s exists but is INVALID: it would be dropped and rebuilt", label)
            planned.append(resolved.drop_statement())
        planned.append(resolved.create_statement())
    texts = tuple(s.as_string(conn) for s in planned)
    for text in texts:
        log.info("dry run: would run: %s", text)
    return IndexResult(
        resolved.qualified_name, "dry_run", 0, texts, timedelta(seconds=time.monotonic() - started)
    )


def drop_index(
    connect: Connector,
    name: str,
    *,
    migration_id: str,
    log: logging.Logger,
    schema: str | None = None,
    lock_timeout: timedelta = timedelta(seconds=2),
    ddl_retries: int = 20,
    progress_interval: timedelta = timedelta(seconds=5),
    dry_run: bool = False,
    ledger_schema: str = DEFAULT_SCHEMA,
) -> IndexResult:
    """``DROP INDEX CONCURRENTLY IF EXISTS`` with lock retries, for the contract phase; idempotent.

    Without ``schema`` the index is found through ``search_path``. Ledger step ``drop_index:<name>``.
    """
    if not name or len(name.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
        raise IndexSpecError(name, "name", f"must be 1 to {MAX_IDENTIFIER_BYTES} bytes long")
    policy = _policy(name, lock_timeout, ddl_retries)
    started = time.monotonic()
    with closing(connect()) as conn:
        conn.autocommit = True
        set_lock_timeout(conn, policy.lock_timeout)
        if schema is None:
            row = conn.execute(
                "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.oid = to_regclass(%s)",
                (sql.Identifier(name).as_string(conn),),
            ).fetchone()
            schema = str(row[0]) if row else None
        qualified = f"{schema}.{name}" if schema else name
        label = f"index {qualified}"
        existing = find_index(conn, schema, name) if schema else None
        statement = sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(
            sql.Identifier(schema, name) if schema else sql.Identifier(name)
        )
        text = statement.as_string(conn)
        if existing is None:
            log.info("%s does not exist: nothing to drop", label)
        if dry_run:
            if existing is not None:
                log.info("dry run: would run: %s", text)
            return IndexResult(qualified, "dry_run", 0, (text,) if existing else (), _since(started))
        ledger, step = Ledger(ledger_schema), drop_step_name(name)
        ledger.ensure(conn)
        ledger.start_step(conn, migration_id, step)
        if existing is None:
            ledger.finish_step(conn, migration_id, step, status="success")
            return IndexResult(qualified, "absent", 0, (), _since(started))
        try:
            with _index_lock(conn, qualified), closing(connect()) as monitor_conn:
                monitor_conn.autocommit = True
                _fail_if_foreign_build(conn, qualified, existing.oid)
                log.info("%s: %s", label, text)
                run_concurrently(
                    conn,
                    monitor_conn,
                    statement,
                    label=label,
                    policy=policy,
                    progress_interval=progress_interval,
                    log=log,
                )
        except Exception as exc:
            Lifecycle(ledger).record_failure(connect, migration_id, step, exc, log)
            raise
        ledger.finish_step(conn, migration_id, step, status="success")
    log.info("%s dropped (%.1f s)", label, _since(started).total_seconds())
    return IndexResult(qualified, "dropped", 0, (text,), _since(started))


def _since(started: float) -> timedelta:
    return timedelta(seconds=time.monotonic() - started)
