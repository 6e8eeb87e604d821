"""A migration plan's phase carried out by the DDL runner, after the same lint as hand-written SQL.

The plan's groups become the runner's groups as they are (their transaction boundaries are the plan's),
so the runner's lock retries, checkpoints and ledger apply unchanged; every statement is logged first.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from airflow_provider_expand.engine.database import Connector
from airflow_provider_expand.engine.ddl.phase import PhaseResult, run_phase
from airflow_provider_expand.engine.ddl.plan import Plan, plan_groups
from airflow_provider_expand.engine.ddl.runner import DDLPolicy
from airflow_provider_expand.engine.errors import DefinitiveError
from airflow_provider_expand.engine.ledger.store import Ledger
from airflow_provider_expand.engine.lifecycle import Event
from airflow_provider_expand.engine.lint.findings import Finding
from airflow_provider_expand.engine.lint.linter import lint_phases
from airflow_provider_expand.engine.operations.plan import PHASES, Group, MigrationPlan, Phase
from airflow_provider_expand.engine.statements import Statement, parse_statements


class GeneratedSQLLintError(DefinitiveError):
    """The SQL the operations generated has lint findings: a bug, or a case the operation does not cover."""


def _statements(group: Group, number: int) -> tuple[Statement, ...]:
    source = f"{group.label or 'group'} (group {number})"
    out: list[Statement] = []
    for text in group.statements:
        parsed = parse_statements(text, source=source)
        if len(parsed) != 1:
            raise ValueError(f"{source}: a plan statement must be exactly one statement: {text[:80]!r}")
        out.extend(parsed)
    return tuple(out)


def ddl_plan(groups: Sequence[Group]) -> Plan:
    """The DDL runner's plan of ``groups``, boundaries kept."""
    return plan_groups([(_statements(g, i), g.autocommit) for i, g in enumerate(groups, 1)])


def lint_plan(
    plan: MigrationPlan, phases: Sequence[Phase] = ("expand", "contract", "rollback")
) -> list[Finding]:
    """Findings of the same linter that checks hand-written phase files, on the generated phases (linted
    together, as a migration's files are, so the contract may validate what the expand added NOT VALID)."""
    texts = [(p, plan.phase_sql(p), f"{plan.migration_id}:{p} (generated)") for p in PHASES if plan.phase(p)]
    findings = lint_phases(texts, indexes=[i.name for i in plan.indexes])
    return [f for f in findings if f.file.split(":")[-1].split(" ")[0] in phases]


def log_phase(plan: MigrationPlan, phase: Phase, log: logging.Logger) -> None:
    """Every statement the phase will run, group by group, with its transaction mode."""
    groups = plan.phase(phase)
    log.info("%s of %s: %d group(s) generated from the operations", phase, plan.migration_id, len(groups))
    for number, group in enumerate(groups, 1):
        mode = "autocommit" if group.autocommit else "transaction"
        log.info("-- group %d/%d (%s) %s", number, len(groups), mode, group.label)
        for statement in group.statements:
            log.info("%s;", statement)


def run_plan_phase(
    connect: Connector,
    plan: MigrationPlan,
    phase: Phase,
    *,
    policy: DDLPolicy,
    ledger: Ledger,
    log: logging.Logger,
    events: tuple[Event, Event] | None = None,
    dry_run: bool = False,
    dag_id: str | None = None,
    run_id: str | None = None,
    step: str | None = None,
) -> PhaseResult:
    """Lint, log and run ``phase`` of ``plan`` as ledger step ``step`` (the phase's name by default)."""
    findings = lint_plan(plan, (phase,))
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        listing = "\n".join(f"  {f}" for f in errors)
        raise GeneratedSQLLintError(f"the generated {phase} SQL has {len(errors)} lint error(s):\n{listing}")
    for warning in findings:
        log.warning("%s", warning)  # as the DAG's lint task does: warnings are shown, errors stop the phase
    log_phase(plan, phase, log)
    return run_phase(
        connect,
        ddl_plan(plan.phase(phase)),
        migration_id=plan.migration_id,
        step=step or phase,
        policy=policy,
        ledger=ledger,
        log=log,
        events=events,
        dry_run=dry_run,
        dag_id=dag_id,
        run_id=run_id,
    )
