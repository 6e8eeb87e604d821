"""Migration folder -> Airflow DAG: the runbook's steps as tasks, with rollback and the queue teardown.

Building a DAG reads only the folder (spec and SQL files): no database is touched at parse time.
Steps absent from the spec are absent from the graph.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, BaseOperator, TaskGroup, TriggerRule

from airflow_provider_expand.dag_params import DRY_RUN, PARAMS, START_DATE, TAGS, doc_md
from airflow_provider_expand.dag_release import ReleaseSteps
from airflow_provider_expand.engine.lifecycle import Event
from airflow_provider_expand.engine.operations.planner import build_operations, contract_fates
from airflow_provider_expand.engine.redact import redact_url
from airflow_provider_expand.engine.statements import load_statements, relations
from airflow_provider_expand.notifications import attach_notifiers, deadline_alert
from airflow_provider_expand.operators.approval import ContractApprovalOperator
from airflow_provider_expand.operators.backfill import BatchBackfillOperator
from airflow_provider_expand.operators.backup import PgDumpOperator
from airflow_provider_expand.operators.deploy import DockerDeployOperator
from airflow_provider_expand.operators.index import ConcurrentIndexOperator
from airflow_provider_expand.operators.ledger import LedgerPhaseOperator, MigrationGateOperator
from airflow_provider_expand.operators.lint import LintOperator
from airflow_provider_expand.operators.migrator import MigratorOperator
from airflow_provider_expand.operators.operations import OperationsBackfillOperator, OperationsIndexOperator
from airflow_provider_expand.operators.phase_sql import PhaseSQLOperator
from airflow_provider_expand.operators.rollback import RollbackOperator
from airflow_provider_expand.operators.verify import VerifyOperator
from airflow_provider_expand.restore_dag import build_restore_dag
from airflow_provider_expand.retries import retry_args
from airflow_provider_expand.sensors.backup import BackupFreshnessSensor
from airflow_provider_expand.sensors.preflight import LongTransactionSensor
from airflow_provider_expand.sensors.soak import SoakSensor
from airflow_provider_expand.spec import (
    MigrationSpec,
    SpecError,
    SqlPhase,
    VerifySpec,
    find_migrations,
    load_migration,
)

log = logging.getLogger(__name__)


def _check(check: VerifySpec) -> dict[str, Any]:
    """A spec check as plain data (what ``engine.verify.checks.check_from_mapping`` reads back in the task)."""
    return dataclasses.asdict(check.as_check())


class _MigrationDag(ReleaseSteps):
    """Builds one migration's tasks in runbook order; ``at_risk`` collects the tasks whose failure rolls back."""

    def __init__(self, spec: MigrationSpec) -> None:
        super().__init__(spec)
        self.at_risk: list[Any] = []
        self.tables: dict[SqlPhase, list[str]] = {
            phase: relations(load_statements(path)) for phase, path in spec.sql_files().items()
        }
        self.operations = build_operations(spec.operation_entries(), spec.plan_context())
        if self.operations:
            self.tables["expand"] = list(dict.fromkeys(t for op in self.operations for t in op.tables()))

    def phase_sql(self, phase: SqlPhase, **kwargs: Any) -> PhaseSQLOperator | None:
        path = self.spec.sql_path(phase)
        if path is None and not self.operations:
            return None
        source: dict[str, Any] = (
            {"sql_file": str(path)} if path is not None else {"operations_folder": str(self.spec.folder)}
        )
        cls = RollbackOperator if phase == "rollback" else PhaseSQLOperator
        return cls(
            task_id=phase,
            phase=phase,
            **source,
            lock_timeout=self.spec.lock_timeout,
            ddl_retries=self.spec.ddl_retries,
            statement_timeout=self.spec.statement_timeout,
            ledger_schema=self.spec.ledger_schema,
            dry_run=DRY_RUN,
            **self.common(),
            **kwargs,
        )

    def build(self) -> DAG:
        spec = self.spec
        with DAG(
            dag_id=spec.id,
            description=spec.description or None,
            schedule=None,
            start_date=START_DATE,
            catchup=False,
            max_active_runs=1,
            tags=[*TAGS, *spec.tags],
            params=PARAMS,
            doc_md=doc_md(spec),
            render_template_as_native_obj=True,
            default_args=retry_args(spec.retries, spec.retry_delay),
            deadline=deadline_alert(spec),
        ) as dag:
            steps: list[Any] = [
                LintOperator(task_id="lint", folder=str(spec.folder)),
                self.begin(),
                self.preflight(),
            ]
            steps += self.backup()
            queues = self.queues()
            if queues:
                steps += queues[:2]
                # a setup task may only lead to ALL_SUCCESS tasks; a failed pause still fails the drain
                self.at_risk.append(queues[1])
            expand = self.expand()
            verify_expand = self.verify("verify_expand", "expand", baseline="begin")
            live = [t for t in (expand, verify_expand) if t is not None]
            deployed = self.deploy()
            steps += live + deployed
            self.at_risk += live + deployed
            if queues and (live or deployed):
                # the schema is ready and the new code runs: let the workers take jobs again
                (deployed[:1] or live)[-1] >> queues[2]
            work = self.backfills() + self.indexes()
            steps += work
            self.at_risk += work
            if spec.soak is not None:
                soak = SoakSensor(
                    task_id="soak",
                    soak=spec.soak,
                    contract_window=spec.contract_window,
                    ledger_schema=spec.ledger_schema,
                    dry_run=DRY_RUN,
                    **self.common(),
                )
                steps.append(soak)
                self.at_risk.append(soak)
            approval = self.approval()
            if approval is not None:
                steps.append(approval)
                self.at_risk.append(approval)  # only a person's "Roll back" fails it
            contract = self.phase_sql("contract")
            verify = self.verify("verify", "contract", baseline="verify_expand" if verify_expand else "begin")
            done = LedgerPhaseOperator(
                task_id="done",
                event=Event.COMPLETED,
                ledger_schema=spec.ledger_schema,
                dry_run=DRY_RUN,
                **self.common(),
            )
            steps += [t for t in (contract, verify) if t is not None] + [done]
            _chain(steps)
            rollback = self.rollback()
            if rollback is not None and self.at_risk:
                for task in self.at_risk:
                    task >> rollback
            if spec.notify is not None:
                attach_notifiers(spec, dag, done=done, rollback=rollback)
        return dag

    def approval(self) -> BaseOperator | None:
        """A person's go-ahead between the soak and the contract (``contract_approval:``)."""
        approval = self.spec.contract_approval
        if approval is None:
            return None
        return ContractApprovalOperator(
            task_id="approve_contract",
            timeout=approval.timeout,
            # Airflow 3.3.2 (LocalExecutor): an answer given within seconds of the task parking is lost to a
            # retry, which asks again; spare tries so that only a person's "Roll back" can fail this task
            retries=max(self.spec.retries, 10),
            approvers=list(approval.approvers),
            ledger_schema=self.spec.ledger_schema,
            dry_run=DRY_RUN,
            **self.common(),
        )

    def expand(self) -> BaseOperator | None:
        """expand.sql through the DDL runner, or the app's own migrator in its image."""
        migrator = self.spec.migrator
        if migrator is None:
            return self.phase_sql("expand")
        docker = self.deploy_args() or {}
        return MigratorOperator(
            task_id="expand",
            image=migrator.image,
            command=migrator.command,
            environment=dict(migrator.environment),
            docker_url=docker.get("docker_url"),
            docker_conn_id=docker.get("docker_conn_id"),
            ledger_schema=self.spec.ledger_schema,
            dry_run=DRY_RUN,
            **self.common(),
        )

    def rollback(self) -> BaseOperator | None:
        """rollback.sql, preceded by the container's way back; the container alone without rollback.sql.

        With a deploy the rollback owns the queues from before the swap until after rollback.sql.
        """
        args, queues = self.deploy_args(), self.rollback_queues()
        if self.spec.sql_path("rollback") is not None or self.operations:
            return self.phase_sql("rollback", trigger_rule=TriggerRule.ONE_FAILED, deploy=args, queues=queues)
        if args is None:
            return None
        return DockerDeployOperator(
            task_id="rollback",
            rollback=True,
            trigger_rule=TriggerRule.ONE_FAILED,
            ledger_schema=self.spec.ledger_schema,
            dry_run=DRY_RUN,
            queues=queues,
            **args,
            **self.common(),
        )

    def begin(self) -> BaseOperator:
        return MigrationGateOperator(
            task_id="begin",
            tables=self.tables.get("expand", []),
            holds=list(dict.fromkeys(t for phase in self.tables.values() for t in phase)),
            ledger_schema=self.spec.ledger_schema,
            dry_run=DRY_RUN,
            **self.common(),
        )

    def preflight(self) -> BaseOperator:
        backup = self.spec.backup
        return LongTransactionSensor(
            task_id="preflight",
            postgres_conn_id=self.spec.postgres_conn_id,
            max_transaction_age=self.spec.preflight.max_transaction_age,
            wait=self.spec.preflight.wait,
            redis_conn_id=self.spec.redis_conn_id,
            backup_directory=str(backup.directory) if backup and backup.take else None,
        )

    def backup(self) -> list[BaseOperator]:
        backup = self.spec.backup
        if backup is None:
            return []
        tasks: list[BaseOperator] = []
        with TaskGroup("backup"):
            if backup.take:
                dump = PgDumpOperator(
                    task_id="dump",
                    postgres_conn_id=self.spec.postgres_conn_id,
                    directory=str(backup.directory),
                )
                tasks.append(dump)
            fresh = BackupFreshnessSensor(
                task_id="fresh",
                directory=str(backup.directory),
                pattern=backup.pattern,
                max_age=backup.max_age,
                must_contain=list(backup.must_contain),
            )
            tasks.append(fresh)
        return tasks

    def verify(self, task_id: str, after: str, *, baseline: str) -> BaseOperator | None:
        phase_tables = self.tables.get("expand", []) + (
            self.tables.get("contract", []) if after == "contract" else []
        )
        checks = self.spec.checks_after(after)  # type: ignore[arg-type]
        if not checks and not phase_tables:
            return None
        return VerifyOperator(
            task_id=task_id,
            # verify_expand checks the expanded schema: once the contract started there is none to check
            forward_only_noop=after == "expand",
            **self.common(),
            ledger_schema=self.spec.ledger_schema,
            checks=[_check(c) for c in checks],
            tables=list(dict.fromkeys(phase_tables)),
            baseline_task_id=baseline,
            # rename_table and drop_table: the table is under its new name, or gone, after the contract
            table_fates=contract_fates(self.operations) if after == "contract" else None,
            dry_run=DRY_RUN,
        )

    def backfills(self) -> list[Any]:
        tasks: list[Any] = []
        for fill in self.spec.backfill:
            kwargs = {
                **self.common(),
                "table": fill.table,
                "set": fill.set,
                "where": fill.where,
                "key": fill.key,
                "batch_size": f"{{{{ params.batch_size or {fill.batch_size} }}}}",
                "target_batch_time": fill.target_batch_time,
                "pause": fill.pause,
                "partitions": fill.partitions,
                "health": self.spec.health.settings(fill.health).as_dict(),
                "ledger_schema": self.spec.ledger_schema,
                "dry_run": DRY_RUN,
            }
            task_id = f"backfill.{fill.table}"
            if fill.partitions > 1:
                mapped = BatchBackfillOperator.partial(task_id=task_id, **kwargs).expand(
                    partition=list(range(fill.partitions))
                )
                tasks.append(mapped)
            else:
                tasks.append(BatchBackfillOperator(task_id=task_id, partition=0, **kwargs))
        tables = dict.fromkeys(t for op in self.operations for t in op.backfill_tables())
        for table in tables:
            tasks.append(
                OperationsBackfillOperator(
                    task_id=f"backfill.{table}",
                    operations_folder=str(self.spec.folder),
                    table=table,
                    partition=0,
                    batch_size="{{ params.batch_size or 10000 }}",
                    ledger_schema=self.spec.ledger_schema,
                    dry_run=DRY_RUN,
                    **self.common(),
                )
            )
        return tasks

    def indexes(self) -> list[BaseOperator]:
        return [
            ConcurrentIndexOperator(
                task_id=f"index.{index.name}",
                name=index.name,
                table=index.table,
                columns=list(index.columns),
                unique=index.unique,
                where=index.where,
                using=index.using,
                lock_timeout=self.spec.lock_timeout,
                ddl_retries=self.spec.ddl_retries,
                ledger_schema=self.spec.ledger_schema,
                dry_run=DRY_RUN,
                **self.common(),
            )
            for index in self.spec.indexes
        ] + [
            OperationsIndexOperator(
                task_id=f"index.{name}",
                operations_folder=str(self.spec.folder),
                name=name,
                lock_timeout=self.spec.lock_timeout,
                ddl_retries=self.spec.ddl_retries,
                ledger_schema=self.spec.ledger_schema,
                dry_run=DRY_RUN,
                **self.common(),
            )
            for name in dict.fromkeys(n for op in self.operations for n in op.index_names())
        ]


def _chain(steps: Sequence[Any]) -> None:
    """Runbook order, one step after the other (index builds on one table must not overlap)."""
    for upstream, downstream in itertools.pairwise(steps):
        upstream >> downstream


def _broken_dag(path: Path, error: Exception) -> DAG:
    """Stands in for a folder that does not load, so one typo does not hide the other migrations (one may
    be mid-soak) and the error shows in the UI, on the ``lint`` task that fails with it."""
    dag_id = "".join(c if c.isalnum() or c in "_-." else "_" for c in path.name)
    with DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        tags=[*TAGS, "broken"],
        doc_md=f"# {dag_id} does not load\n\n```\n{redact_url(str(error))}\n```",
    ) as dag:
        LintOperator(task_id="lint", folder=str(path))
    return dag


def build_migration_dag(path: Path | str) -> DAG:
    """The DAG of the migration folder at ``path``; a bad spec raises :class:`SpecError` naming file and key."""
    return _MigrationDag(load_migration(Path(path))).build()


def build_migration_dags(folder: Path | str, *, strict: bool = False) -> dict[str, DAG]:
    """Every migration below ``folder`` keyed by DAG id, plus a restore DAG where a backup is configured.

    A folder that does not load raises with ``strict``; otherwise it is logged and becomes a DAG whose only
    task, ``lint``, fails with the error.
    """
    dags: dict[str, DAG] = {}
    for path in find_migrations(Path(folder)):
        try:
            spec = load_migration(path)
            built = [_MigrationDag(spec).build()]
        except (SpecError, OSError, ValueError) as exc:
            if strict:
                raise
            log.error("migration %s does not load: %s", path, exc)
            built = [_broken_dag(path, exc)]
        else:
            if spec.backup is not None:
                built.append(build_restore_dag(spec))
        dags.update((dag.dag_id, dag) for dag in built)
    return dags
