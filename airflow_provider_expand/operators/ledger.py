"""The DAG's bookends: ``begin`` claims the migration in the ledger, ``done`` marks it completed.

``begin`` is what makes a re-run of a completed migration a no-op (it skips everything downstream) and a
re-run after a rollback start over (it resets the ledger), while a re-run after a plain failure resumes
(after a failed contract: the contract resumes, the steps before it succeed without doing anything).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowSkipException

from airflow_provider_expand.engine.ledger.holds import claim
from airflow_provider_expand.engine.ledger.store import DEFAULT_SCHEMA, Ledger
from airflow_provider_expand.engine.lifecycle import Event, Lifecycle, forward_only
from airflow_provider_expand.engine.verify.checks import snapshot
from airflow_provider_expand.hooks.postgres import postgres_connector
from airflow_provider_expand.retries import ClassifiedErrors
from airflow_provider_expand.templated import as_bool


def _run_id(context: Context) -> str | None:
    dag_run = context.get("dag_run")
    return str(dag_run.run_id) if dag_run is not None else None


class MigrationGateOperator(ClassifiedErrors, BaseOperator):
    """Claims the migration for this run and returns the RLS state of the tables the expand touches."""

    template_fields: Sequence[str] = ("is_dry_run",)
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        migration_id: str,
        postgres_conn_id: str,
        tables: Sequence[str] = (),
        holds: Sequence[str] = (),
        ledger_schema: str = DEFAULT_SCHEMA,
        dry_run: bool | str = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.migration_id = migration_id
        self.postgres_conn_id = postgres_conn_id
        self.tables = list(tables)
        # every table the migration touches: refused while another migration in flight holds one of them
        self.holds = list(holds)
        self.ledger_schema = ledger_schema
        self.is_dry_run = dry_run

    def execute(self, context: Context) -> dict[str, Any]:
        lifecycle = Lifecycle(Ledger(self.ledger_schema))
        connect = postgres_connector(self.postgres_conn_id)
        dry_run = as_bool(self.is_dry_run)
        with connect() as conn:
            conn.autocommit = True
            record = lifecycle.record(conn, self.migration_id)
            if record is not None and record.phase == "completed":
                raise AirflowSkipException(
                    f"migration {self.migration_id} already completed (contracted at {record.contracted_at}); "
                    "nothing to do"
                )
            if not dry_run and self.holds:
                # before anything is recorded: refused while another migration in flight holds a table
                lifecycle.ledger.ensure(conn)
                claim(conn, self.ledger_schema, self.migration_id, self.holds)
                self.log.info("holds %s until its contract ends", ", ".join(self.holds))
            if dry_run:
                self.log.info(
                    "dry run: ledger phase is %s; nothing recorded", record.phase if record else "absent"
                )
            elif record is not None and record.phase == "rolled_back":
                self.log.info("migration was rolled back at %s: starting over", record.rolled_back_at)
                lifecycle.move(conn, self.migration_id, Event.START_OVER, run_id=_run_id(context))
            else:
                if record is not None and forward_only(record):
                    self.log.warning(
                        "the contract of %s started at %s (earlier run %s): the migration is forward-only; "
                        "this run resumes the contract, the steps before it do nothing",
                        self.migration_id,
                        record.contract_started_at,
                        record.run_id,
                    )
                elif record is not None:
                    self.log.info(
                        "resuming migration from phase %s (earlier run %s)", record.phase, record.run_id
                    )
                lifecycle.move(
                    conn, self.migration_id, Event.BEGIN, dag_id=self.dag_id, run_id=_run_id(context)
                )
        before = snapshot(connect, self.tables)
        self.log.info("RLS state before expand: %s", before.to_json())
        return before.to_json()


class LedgerPhaseOperator(ClassifiedErrors, BaseOperator):
    """Moves the migration's lifecycle by ``event`` (``done``: completed)."""

    template_fields: Sequence[str] = ("is_dry_run",)

    def __init__(
        self,
        *,
        migration_id: str,
        postgres_conn_id: str,
        event: Event,
        ledger_schema: str = DEFAULT_SCHEMA,
        dry_run: bool | str = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.migration_id = migration_id
        self.postgres_conn_id = postgres_conn_id
        self.event = event
        self.ledger_schema = ledger_schema
        self.is_dry_run = dry_run

    def execute(self, context: Context) -> None:
        if as_bool(self.is_dry_run):
            self.log.info("dry run: would record %s", self.event.value)
            return
        with postgres_connector(self.postgres_conn_id)() as conn:
            conn.autocommit = True
            record = Lifecycle(Ledger(self.ledger_schema)).move(
                conn, self.migration_id, self.event, run_id=_run_id(context)
            )
        self.log.info("migration %s is now %s", self.migration_id, record.phase)
