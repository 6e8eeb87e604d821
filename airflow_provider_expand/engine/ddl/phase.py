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
import time
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field

import psycopg

from airflow_provider_expand.engine import errors
from airflow_provider_expand.engine.database import Connector
from airflow_provider_expand.engine.ddl.errors import (
    DDLError,
    DDLStatementError,
    DDLTransientError,
)
from airflow_provider_expand.engine.ddl.plan import Plan, plan_phase
from airflow_provider_expand.engine.ddl.retry import LockRetriesExhaustedError
from airflow_provider_expand.engine.ddl.runner import DDLPolicy, LockRetry, Runner, session, short
from airflow_provider_expand.engine.ledger.lock import migration_lock
from airflow_provider_expand.engine.ledger.store import Ledger, StepRecord
from airflow_provider_expand.engine.lifecycle import Event, Lifecycle
from airflow_provider_expand.engine.statements import Statement

__all__ = [
    "PHASE_EVENTS",
    "DDLError",
    "DDLPolicy",
    "DDLStatementError",
    "DDLTransientError",
    "LockRetriesExhaustedError",
    "LockRetry",
    "PhaseResult",
    "StaleCheckpointError",
    "run_phase",
]

ROLLBACK_STEP = "rollback"  # once it has run, the other phases' checkpoints are stale

# The lifecycle events of each SQL phase: when it starts and when it succeeds.
PHASE_EVENTS: dict[str, tuple[Event, Event]] = {
    "expand": (Event.EXPAND_STARTED, Event.EXPANDED),
    "contract": (Event.CONTRACT_STARTED, Event.CONTRACTED),
    "rollback": (Event.ROLLBACK_STARTED, Event.ROLLED_BACK),
}


class StaleCheckpointError(errors.DefinitiveError):
    """The ledger's checkpoint of a phase was overtaken by a rollback: resuming from it would skip work."""


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


def run_phase(
    connect: Connector,
    statements: Sequence[Statement] | Plan,
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
    ``statements`` may also be a :class:`Plan` whose groups are given explicitly (the declarative operations
    decide their own transaction boundaries).
    """
    plan = statements if isinstance(statements, Plan) else plan_phase(statements)
    groups = plan.groups
    if dry_run:
        return _dry_run(connect, plan, migration_id=migration_id, step=step, ledger=ledger, log=log)
    name = f"airflow-expand:{migration_id}:{step}"
    with session(connect, name, policy) as control:
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
                with session(connect, name, policy) as ddl:
                    ddl.add_notice_handler(lambda d: log.info("server notice: %s", d.message_primary))
                    runner = Runner(
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
            f"migration {migration_id!r}: a rollback began after the earlier try of {step}, so {step}'s "
            "checkpoint no longer describes the schema. If that rollback did not finish, this run's rollback "
            "finishes it; once the ledger says rolled_back, trigger the DAG again to start over (begin "
            "resets the ledger then)"
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
            log.info("[dry run]   %s [%s] %s", stmt.where, group.mode, short(stmt.sql, 200))
    log.info("[dry run] %s of %s: nothing was changed", step, migration_id)
    return PhaseResult(step, len(groups), 0, done, dry_run=True)
