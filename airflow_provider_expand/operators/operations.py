"""The backfill and index steps of a migration given as ``operations:``: the existing operators, their
table, columns and SQL taken at run time from the plan (planned from the expand's schema snapshot)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

from airflow.sdk import Context

from airflow_provider_expand.engine.operations.phases import SnapshotMissingError, migration_plan
from airflow_provider_expand.engine.operations.plan import MigrationPlan
from airflow_provider_expand.hooks.postgres import postgres_connector
from airflow_provider_expand.operators.backfill import BatchBackfillOperator
from airflow_provider_expand.operators.index import ConcurrentIndexOperator
from airflow_provider_expand.spec import load_migration
from airflow_provider_expand.templated import as_bool


def _plan(folder: str, postgres_conn_id: str, ledger_schema: str, dry_run: object) -> MigrationPlan:
    spec = load_migration(Path(folder))
    plan = migration_plan(
        postgres_connector(postgres_conn_id),
        spec.operation_entries(),
        spec.plan_context(),
        ledger_schema=ledger_schema,
        dry_run=as_bool(dry_run),
    )
    if plan is None:
        raise SnapshotMissingError(f"{spec.id}: no schema snapshot: the expand has not run")
    return plan


class OperationsBackfillOperator(BatchBackfillOperator):
    """``backfill.<table>`` of an operations migration: fills the rows the marker says are not done yet
    (the operations' ``up`` triggers compute the values); a table created by this migration has none."""

    def __init__(self, *, operations_folder: str, **kwargs: Any) -> None:
        kwargs.setdefault("set", "")
        kwargs.setdefault("where", None)
        super().__init__(**kwargs)
        self.operations_folder = operations_folder
        self.operation_table = self.table

    def execute(self, context: Context) -> dict[str, Any]:
        plan = _plan(self.operations_folder, self.postgres_conn_id, self.ledger_schema, self.is_dry_run)
        fill = plan.backfill(self.operation_table)
        if fill is None:
            self.log.info(
                "%s: nothing to backfill (the table is new in this migration)", self.operation_table
            )
            return {"table": self.operation_table, "skipped": "nothing to backfill"}
        self.table, self.set, self.where, self.key = fill.physical, fill.set, fill.where, fill.key
        self.log.info(
            "backfill of %s: UPDATE %s SET %s WHERE %s", fill.table, fill.physical, fill.set, fill.where
        )
        return super().execute(context)


class OperationsIndexOperator(ConcurrentIndexOperator):
    """``index.<name>`` of an operations migration: the index builder with the plan's table and columns."""

    def __init__(self, *, operations_folder: str, **kwargs: Any) -> None:
        kwargs.setdefault("table", "")
        kwargs.setdefault("columns", ())
        super().__init__(**kwargs)
        self.operations_folder = operations_folder

    def execute(self, context: Context) -> dict[str, Any]:
        plan = _plan(self.operations_folder, self.postgres_conn_id, self.ledger_schema, self.is_dry_run)
        build = plan.index(self.index_name)
        if build is None:
            raise SnapshotMissingError(f"index {self.index_name}: not in the migration's plan")
        self.table, self.columns, self.unique = build.table, list(build.columns), build.unique
        self.where, self.using = build.where, build.using
        cast(logging.Logger, self.log).info(
            "index %s on %s (%s)%s",
            build.name,
            build.table,
            ", ".join(build.columns),
            " unique" if build.unique else "",
        )
        return super().execute(context)
