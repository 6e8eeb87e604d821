"""``PhaseSQLOperator``: one phase's SQL file (expand, contract or rollback) through the DDL runner.

Thin on purpose: the connection comes from ``PostgresHook``, everything else (lock retries, transaction
groups, the advisory lock, resume, the ledger) from :func:`airflow_provider_expand.engine.ddl.phase.run_phase`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, cast, get_args

from airflow.sdk import BaseOperator, Context

from airflow_provider_expand.engine.ddl.phase import PHASE_EVENTS, DDLPolicy, run_phase
from airflow_provider_expand.engine.ledger.store import DEFAULT_SCHEMA, Ledger
from airflow_provider_expand.engine.operations.phases import run_operations_phase
from airflow_provider_expand.engine.statements import load_statements
from airflow_provider_expand.hooks.postgres import postgres_connector
from airflow_provider_expand.retries import ClassifiedErrors
from airflow_provider_expand.spec import load_migration
from airflow_provider_expand.templated import as_bool

PhaseName = Literal["expand", "contract", "rollback"]


class PhaseSQLOperator(ClassifiedErrors, BaseOperator):
    """Apply ``sql_file`` as the ``phase`` of ``migration_id`` with ``lock_timeout`` and lock retries.

    ``dry_run`` (attribute ``is_dry_run``: ``BaseOperator.dry_run`` is a method) logs the plan and changes
    nothing; it accepts the strings ``"True"``/``"False"`` as well, for non-native template rendering.
    """

    template_fields: Sequence[str] = ("migration_id", "sql_file", "is_dry_run")
    # ``operations_folder``: the phase is generated from the migration's ``operations:`` instead of a file
    ui_color = "#fde9d9"

    def __init__(
        self,
        *,
        migration_id: str,
        phase: PhaseName,
        postgres_conn_id: str,
        sql_file: str | None = None,
        operations_folder: str | None = None,
        lock_timeout: timedelta,
        ddl_retries: int,
        statement_timeout: timedelta | None = None,
        ledger_schema: str = DEFAULT_SCHEMA,
        dry_run: bool | str = False,
        migration_lock_wait: timedelta = timedelta(seconds=60),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if phase not in get_args(PhaseName):
            raise ValueError(f"phase must be one of {', '.join(get_args(PhaseName))}, got {phase!r}")
        self.migration_id = migration_id
        self.phase = phase
        if (sql_file is None) == (operations_folder is None):
            raise ValueError("give sql_file or operations_folder (exactly one)")
        self.sql_file = sql_file or ""
        self.operations_folder = operations_folder
        self.postgres_conn_id = postgres_conn_id
        self.ledger_schema = ledger_schema
        self.is_dry_run = dry_run
        # built here so a bad lock_timeout or ddl_retries fails when the DAG is parsed, not mid-migration
        self.policy = DDLPolicy(
            lock_timeout=lock_timeout,
            retries=ddl_retries,
            statement_timeout=statement_timeout,
            migration_lock_wait=migration_lock_wait,
        )

    def execute(self, context: Context) -> dict[str, object]:
        dag_run = context.get("dag_run")
        if self.operations_folder is not None:
            spec = load_migration(Path(self.operations_folder))
            return run_operations_phase(
                postgres_connector(self.postgres_conn_id),
                spec.operation_entries(),
                spec.plan_context(),
                self.phase,
                policy=self.policy,
                ledger_schema=self.ledger_schema,
                log=cast(logging.Logger, self.log),
                dry_run=self._dry_run_flag(),
                dag_id=self.dag_id,
                run_id=str(dag_run.run_id) if dag_run is not None else None,
            )
        statements = load_statements(self.sql_path())
        result = run_phase(
            postgres_connector(self.postgres_conn_id),
            statements,
            migration_id=self.migration_id,
            step=self.phase,
            policy=self.policy,
            ledger=Ledger(self.ledger_schema),
            log=cast(logging.Logger, self.log),  # Airflow's structlog logger takes %-style args too
            events=PHASE_EVENTS[self.phase],
            dry_run=self._dry_run_flag(),
            dag_id=self.dag_id,
            run_id=str(dag_run.run_id) if dag_run is not None else None,
        )
        return result.summary()

    def _dry_run_flag(self) -> bool:
        try:
            return as_bool(self.is_dry_run)
        except ValueError as exc:
            raise ValueError(f"{self.task_id}: dry_run: {exc}") from exc

    def sql_path(self) -> Path:
        """``sql_file`` as given when absolute, else found in the DAG's template search path or folder."""
        path = Path(self.sql_file)
        if path.is_absolute():
            return path
        folders: list[Path] = []
        if self.has_dag():
            searchpath = self.dag.template_searchpath or []
            folders += [Path(p) for p in ([searchpath] if isinstance(searchpath, str) else searchpath)]
            if self.dag.fileloc:
                folders.append(Path(self.dag.fileloc).parent)
        for folder in folders:
            if (folder / path).is_file():
                return folder / path
        tried = ", ".join(str(f) for f in folders) or "no DAG folder known"
        raise FileNotFoundError(f"{self.task_id}: sql_file {self.sql_file!r} not found (looked in: {tried})")
