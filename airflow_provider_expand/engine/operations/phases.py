"""What the DAG's tasks call: a migration's operations planned from its snapshot, then one phase run.

The expand takes the snapshot (the catalog before its first statement); every later task plans from it.
A dry run never writes one: it plans from the catalog as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import closing
from dataclasses import replace
from typing import Any

from airflow_provider_expand.engine.database import Connector
from airflow_provider_expand.engine.ddl.phase import PHASE_EVENTS, PhaseResult
from airflow_provider_expand.engine.ddl.runner import DDLPolicy
from airflow_provider_expand.engine.errors import DefinitiveError
from airflow_provider_expand.engine.ledger.store import Ledger
from airflow_provider_expand.engine.operations import snapshot
from airflow_provider_expand.engine.operations.base import PlanContext
from airflow_provider_expand.engine.operations.execute import run_plan_phase
from airflow_provider_expand.engine.operations.plan import MigrationPlan, Phase
from airflow_provider_expand.engine.operations.planner import Entry, build_operations, plan_migration
from airflow_provider_expand.engine.operations.schema import read_schema
from airflow_provider_expand.engine.operations.views import create_views

VIEWS_STEP = "expand:views"  # the version schema read from the catalog after an isolated sql operation


class SnapshotMissingError(DefinitiveError):
    """A phase after the expand found no snapshot: the expand never started (or a rollback discarded it)."""


def migration_plan(
    connect: Connector,
    entries: Sequence[Entry],
    ctx: PlanContext,
    *,
    ledger_schema: str,
    take: bool = False,
    dry_run: bool = False,
) -> MigrationPlan | None:
    """The plan from the migration's snapshot (taken now with ``take``); from the live catalog in a dry run
    without one; None when there is no snapshot and none may be taken."""
    operations = build_operations(entries, ctx)
    with closing(connect()) as conn:
        conn.autocommit = True
        model = snapshot.load(conn, ledger_schema, ctx.migration_id)
        if model is not None:
            return plan_migration(operations, model, ctx)
        if not (dry_run or take):
            return None
        model = read_schema(conn, ctx.schema)
        plan = plan_migration(operations, model, ctx)  # bad input fails here, before anything is stored
        if dry_run:
            return plan
        return plan_migration(
            build_operations(entries, ctx), snapshot.store(conn, ledger_schema, ctx.migration_id, model), ctx
        )


def run_operations_phase(
    connect: Connector,
    entries: Sequence[Entry],
    ctx: PlanContext,
    phase: Phase,
    *,
    policy: DDLPolicy,
    ledger_schema: str,
    log: logging.Logger,
    dry_run: bool = False,
    dag_id: str | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Plan (validating every operation first) and run ``phase``; the rollback forgets the snapshot after."""
    plan = migration_plan(
        connect, entries, ctx, ledger_schema=ledger_schema, take=phase == "expand", dry_run=dry_run
    )
    if plan is None:
        raise SnapshotMissingError(
            f"{ctx.migration_id}: no schema snapshot for the {phase}: the expand takes it before its first "
            "statement, so the expand never started (or a finished rollback discarded it)"
        )
    ledger = Ledger(ledger_schema)
    kwargs: dict[str, Any] = dict(
        policy=policy, ledger=ledger, log=log, dry_run=dry_run, dag_id=dag_id, run_id=run_id
    )
    result: PhaseResult = run_plan_phase(connect, plan, phase, events=PHASE_EVENTS[phase], **kwargs)
    if phase == "expand" and plan.refresh_views:
        with closing(connect()) as conn:
            model = read_schema(conn, ctx.schema)
        views = replace(plan, expand=(create_views(model, ctx),))
        run_plan_phase(connect, views, "expand", step=VIEWS_STEP, **kwargs)
    if phase == "rollback" and not dry_run:
        with closing(connect()) as conn:
            conn.autocommit = True
            snapshot.discard(conn, ledger_schema, ctx.migration_id)
    return result.summary()
