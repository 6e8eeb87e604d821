"""The migration's life: its phases, the events that move it, and the guards every task asks first.

Nothing else writes ``migrations.phase``. The rules that matter most live here, in one table:

- until the contract starts, a failure keeps the migration recoverable (``failed``) and ``rollback`` may undo it;
- once the contract has started (``contract_started_at`` is set, just before its first statement is sent),
  the migration is **forward-only**: ``rollback.sql`` never runs for it again, in this run or a later one,
  every step before the contract is a no-op, and a re-run resumes the contract from its checkpoint;
- a completed migration stays completed (a re-run is a no-op); a rolled-back one starts over on a re-run.
"""

from __future__ import annotations

import enum
import logging
import time
from contextlib import closing
from dataclasses import dataclass

import psycopg

from airflow_provider_expand.engine.database import Connector
from airflow_provider_expand.engine.errors import GuardRefusedError, TransientError
from airflow_provider_expand.engine.ledger.store import Ledger, MigrationRecord, Phase


class Event(enum.Enum):
    """What happened to a migration; each moves it along one edge of :data:`TRANSITIONS`."""

    BEGIN = "begin"  # a run claims the migration
    START_OVER = "start_over"  # a run after a rollback resets it
    EXPAND_STARTED = "expand_started"
    EXPANDED = "expanded"
    DEPLOYED = "deployed"
    BACKFILLED = "backfilled"  # every backfill and index build upstream of the soak succeeded
    SOAK_STARTED = "soak_started"
    CONTRACT_STARTED = "contract_started"  # forward-only from here
    CONTRACTED = "contracted"
    COMPLETED = "completed"
    STEP_FAILED = "step_failed"
    ROLLBACK_STARTED = "rollback_started"
    ROLLED_BACK = "rolled_back"


# The phases in which the schema may hold part or all of the expand, and no contract has run.
RECOVERABLE: frozenset[Phase] = frozenset(
    {"expanding", "expanded", "deployed", "backfilled", "soaking", "failed", "rolling_back"}
)
_EXPANDED: frozenset[Phase] = frozenset({"expanded", "deployed", "backfilled", "soaking"})
_RUNNING: frozenset[Phase] = _EXPANDED | {"pending", "expanding"}

# event -> (phases it may happen in, phase it leads to; None keeps the phase).
TRANSITIONS: dict[Event, tuple[frozenset[Phase], Phase | None]] = {
    Event.BEGIN: (_RUNNING | {"failed", "rolling_back", "contracting"}, None),
    Event.START_OVER: (frozenset({"rolled_back"}), "pending"),
    Event.EXPAND_STARTED: (frozenset({"pending", "expanding", "failed"}), "expanding"),
    Event.EXPANDED: (frozenset({"expanding", "expanded"}), "expanded"),
    Event.DEPLOYED: (frozenset({"expanded", "deployed", "failed"}), "deployed"),
    Event.BACKFILLED: (frozenset({"expanded", "deployed", "backfilled", "failed"}), "backfilled"),
    Event.SOAK_STARTED: (frozenset({"backfilled", "soaking"}), "soaking"),
    Event.CONTRACT_STARTED: (_EXPANDED | {"failed", "contracting"}, "contracting"),
    Event.CONTRACTED: (frozenset({"contracting"}), None),
    Event.COMPLETED: (frozenset({"contracting", "completed"}), "completed"),
    # a failed step before the contract: failed; during or after it the phase stays (forward-only)
    Event.STEP_FAILED: (_RUNNING | {"failed", "rolling_back", "contracting"}, "failed"),
    Event.ROLLBACK_STARTED: (RECOVERABLE, "rolling_back"),
    Event.ROLLED_BACK: (frozenset({"rolling_back"}), "rolled_back"),
}

# Entering a phase through these events stamps the matching column (first time only, so a retry keeps it).
STAMPS: dict[Event, tuple[str, ...]] = {
    Event.EXPANDED: ("expanded_at",),
    Event.DEPLOYED: ("deployed_at",),
    Event.BACKFILLED: ("backfilled_at",),
    Event.CONTRACT_STARTED: ("soaked_at", "contract_started_at"),
    Event.CONTRACTED: ("contracted_at",),
    Event.COMPLETED: ("contracted_at",),
    Event.ROLLED_BACK: ("rolled_back_at",),
}


def forward_only(record: MigrationRecord | None) -> bool:
    """Whether the contract has started for ``record``: from then on nothing may undo the expand."""
    return record is not None and (
        record.contract_started_at is not None or record.phase in ("contracting", "completed")
    )


def target_phase(record: MigrationRecord | None, event: Event) -> Phase | None:
    """The phase ``event`` leads to from ``record``'s phase (None: unchanged); refuses an edge not in the table."""
    phase: Phase = record.phase if record is not None else "pending"  # type: ignore[assignment]
    allowed, target = TRANSITIONS[event]
    if phase not in allowed:
        raise GuardRefusedError(
            f"migration {record.id if record else '?'} is {phase}: {event.value} is not allowed then "
            f"(allowed in: {', '.join(sorted(allowed))})"
        )
    if event is Event.STEP_FAILED and forward_only(record):
        return None  # forward-only: the phase keeps saying where the contract stands
    return target


@dataclass(frozen=True)
class Lifecycle:
    """The state machine over one ledger: reads the record, checks the edge, writes phase and stamp."""

    ledger: Ledger

    def record(self, conn: psycopg.Connection, migration_id: str) -> MigrationRecord | None:
        """The migration's row, or None without a ledger; an older ledger is upgraded first, so a guard never
        reads a first-release row that does not yet say the contract started."""
        if not self.ledger.installed(conn):
            return None
        self.ledger.ensure(conn)
        return self.ledger.get(conn, migration_id)

    def move(
        self,
        conn: psycopg.Connection,
        migration_id: str,
        event: Event,
        *,
        dag_id: str | None = None,
        run_id: str | None = None,
    ) -> MigrationRecord:
        """Apply ``event`` to ``migration_id`` atomically (the row is locked while the edge is checked)."""
        self.ledger.ensure(conn)
        with conn.transaction():
            record = self.ledger.get(conn, migration_id, for_update=True)
            if record is None:
                self.ledger.create(conn, migration_id, dag_id=dag_id, run_id=run_id)
                record = self.ledger.get(conn, migration_id, for_update=True)
            assert record is not None
            phase = target_phase(record, event)
            if event is Event.START_OVER:
                self.ledger.reset(conn, migration_id, run_id=run_id)
            else:
                self.ledger.write_phase(
                    conn, migration_id, phase, stamps=STAMPS.get(event, ()), dag_id=dag_id, run_id=run_id
                )
        moved = self.ledger.get(conn, migration_id)
        assert moved is not None
        return moved

    def record_failure(
        self,
        connect: Connector,
        migration_id: str,
        step: str,
        exc: BaseException,
        log: logging.Logger,
        *,
        part: int = 0,
    ) -> None:
        """The one way to record a failed step: the step row says why; a definitive failure before the
        contract also moves the migration to ``failed`` (a transient one keeps the phase: the retry resumes;
        so does a step the rollback stopped, and the contract's, forward-only).
        It writes on a fresh connection (the step's own may be what broke); a ledger that cannot be written
        is logged, never raised over the step's own error."""
        error = (str(exc) or type(exc).__name__)[:2000]
        try:
            with closing(connect()) as conn:
                conn.autocommit = True
                self.ledger.finish_step(conn, migration_id, step, part, status="failed", error=error)
                record = self.ledger.get(conn, migration_id)
                # while rolling back the rollback owns the phase: a sibling it stopped must not move it
                rollback_owns = (
                    record is not None and record.phase == "rolling_back" and not step.startswith("rollback")
                )
                if not isinstance(exc, TransientError) and not rollback_owns:
                    self.move(conn, migration_id, Event.STEP_FAILED)
        except (psycopg.Error, GuardRefusedError) as ledger_exc:
            log.error("could not record the failure of %s in the ledger: %s", step, ledger_exc)

    def refuse_rollback(self, record: MigrationRecord | None) -> str | None:
        """Why ``rollback.sql`` must not run for ``record`` (None: it may)."""
        if forward_only(record):
            assert record is not None
            return (
                f"refusing rollback.sql: the contract of {record.id} started at "
                f"{record.contract_started_at or record.updated_at} (phase {record.phase}); the migration is "
                "forward-only: fix contract.sql and re-run the DAG to resume the contract, or use the "
                "restore_from_backup DAG as a last resort"
            )
        return None

    def noop_reason(self, record: MigrationRecord | None, step: str) -> str | None:
        """Why ``step`` (a step before the contract) must do nothing on this run: the contract has started,
        so it ran to success before and the schema may no longer have what it worked on."""
        if not forward_only(record):
            return None
        assert record is not None
        return (
            f"{step}: nothing to do, the contract of {record.id} has started "
            f"({record.contract_started_at or record.updated_at}); the migration is forward-only and this run "
            "resumes the contract"
        )


def wait_for_steps_to_stop(
    conn: psycopg.Connection, ledger: Ledger, migration_id: str, log: logging.Logger, timeout: float
) -> None:
    """Wait (bounded) until no step of ``migration_id`` is running: a rollback must not race the backfill
    partitions it just told to stop. A step whose worker died stays 'running' forever, hence the bound;
    the rollback's own lock timeouts and retries cover what is left."""
    deadline = time.monotonic() + timeout
    while True:
        running = [f"{s.step}[{s.part}]" for s in ledger.steps(conn, migration_id) if s.status == "running"]
        if not running:
            return
        if time.monotonic() >= deadline:
            log.warning("still marked running after %.0f s, going on: %s", timeout, ", ".join(running))
            return
        log.info("waiting for %s to stop before the rollback", ", ".join(running))
        time.sleep(1.0)


def mermaid_diagram() -> str:
    """The state diagram of :data:`TRANSITIONS` in Mermaid (self-loops left out: :func:`transition_table`
    lists them), for docs/lifecycle.md: generated from the table, so it cannot drift."""
    lines = ["stateDiagram-v2", "    [*] --> pending"]
    for event, (sources, target) in TRANSITIONS.items():
        for source in sorted(sources):
            end = source if event is Event.STEP_FAILED and source == "contracting" else (target or source)
            if end != source:
                lines.append(f"    {source} --> {end}: {event.value}")
    lines.append("    completed --> [*]")
    return "\n".join(lines) + "\n"


def transition_table() -> str:
    """Every edge of :data:`TRANSITIONS` as a Markdown table: event, the phases it may happen in, and after."""
    rows = ["| event | allowed in | leads to | stamps |", "|---|---|---|---|"]
    for event, (sources, target) in TRANSITIONS.items():
        after: str = target or "(unchanged)"
        if event is Event.STEP_FAILED:
            after = "failed (contracting stays contracting: forward-only)"
        stamps = ", ".join(STAMPS.get(event, ())) or "-"
        rows.append(f"| `{event.value}` | {', '.join(sorted(sources))} | {after} | {stamps} |")
    return "\n".join(rows) + "\n"


def lifecycle_doc() -> str:
    """docs/lifecycle.md as it must read (a test compares the file with this)."""
    return (
        "# The migration's lifecycle\n\n"
        "Generated from `airflow_provider_expand/engine/lifecycle.py` (`TRANSITIONS`) by\n"
        "`python -m airflow_provider_expand.engine.lifecycle > docs/lifecycle.md`; a test fails when they differ.\n"
        "Every task asks the lifecycle before it moves the phase; nothing else writes it.\n\n"
        "Once `contract_started` has happened the migration is **forward-only**: `rollback` refuses (the task\n"
        "fails and says why), every step before the contract succeeds without doing anything on a re-run, and\n"
        "the re-run resumes the contract from its checkpoint. A transient failure keeps the phase (the retry\n"
        "resumes); only a definitive one moves it to `failed`.\n\n"
        "```mermaid\n" + mermaid_diagram() + "```\n\n" + transition_table()
    )


if __name__ == "__main__":
    print(lifecycle_doc(), end="")
