"""``VerifyOperator``: the runbook's post-phase checks, failing the step with every check that failed."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, cast

from airflow.sdk import BaseOperator, Context

from airflow_provider_expand.engine.errors import DefinitiveError
from airflow_provider_expand.engine.ledger.store import DEFAULT_SCHEMA
from airflow_provider_expand.engine.verify.checks import (
    CheckResult,
    SchemaSnapshot,
    check_from_mapping,
    compare_policies,
    invalid_indexes,
    run_check,
    snapshot,
)
from airflow_provider_expand.guards import forward_only_noop
from airflow_provider_expand.hooks.postgres import postgres_connector
from airflow_provider_expand.retries import ClassifiedErrors
from airflow_provider_expand.templated import as_bool


class VerificationFailedError(DefinitiveError):
    """One or more checks failed; the message lists each with its reason."""


class VerifyOperator(ClassifiedErrors, BaseOperator):
    """Runs the automatic checks (RLS policies unchanged since ``baseline_task_id``, following the tables in
    ``table_fates`` that the phase renamed or dropped; no invalid index on ``tables``) and the spec's
    ``checks``; returns the RLS state now, as the baseline of the next phase.
    """

    template_fields: Sequence[str] = ("is_dry_run",)
    ui_color = "#e6f4ea"

    def __init__(
        self,
        *,
        postgres_conn_id: str,
        checks: Sequence[Mapping[str, Any]] = (),
        tables: Sequence[str] = (),
        baseline_task_id: str | None = None,
        table_fates: Mapping[str, str | None] | None = None,
        dry_run: bool | str = False,
        migration_id: str | None = None,
        ledger_schema: str = DEFAULT_SCHEMA,
        forward_only_noop: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.migration_id = migration_id
        self.ledger_schema = ledger_schema
        # verify_expand: a re-run resuming the contract finds a half-contracted schema, nothing to verify
        self.forward_only_noop = forward_only_noop
        self.postgres_conn_id = postgres_conn_id
        self.checks = [dict(c) for c in checks]
        self.tables = list(tables)
        self.baseline_task_id = baseline_task_id
        self.table_fates = dict(table_fates or {})  # the tables the phase renamed or dropped
        self.is_dry_run = dry_run

    def execute(self, context: Context) -> dict[str, Any]:
        connect = postgres_connector(self.postgres_conn_id)
        checks = [check_from_mapping(c) for c in self.checks]
        if as_bool(self.is_dry_run):
            for check in checks:
                self.log.info("dry run: would check %r", check.name)
            return snapshot(connect, self.tables).to_json()
        results: list[CheckResult] = []
        now = snapshot(connect, self.tables)
        if self.forward_only_noop and self.migration_id and self._contract_started():
            return now.to_json()
        if self.baseline_task_id:
            baseline = context["ti"].xcom_pull(task_ids=self.baseline_task_id)
            if baseline:
                results += compare_policies(SchemaSnapshot.from_json(baseline), now, self.table_fates)
            else:
                self.log.warning("no RLS baseline from %s: policy comparison skipped", self.baseline_task_id)
        results += invalid_indexes(connect, self.tables)
        results += [run_check(connect, check) for check in checks]
        for result in results:
            self.log.info("%s %s: %s", "PASS" if result.ok else "FAIL", result.name, result.detail)
        failed = [r for r in results if not r.ok]
        if failed:
            lines = "\n".join(f"  - {r.name}: {r.detail}" for r in failed)
            raise VerificationFailedError(f"{len(failed)} of {len(results)} checks failed:\n{lines}")
        self.log.info("all %d checks passed", len(results))
        return now.to_json()

    def _contract_started(self) -> bool:
        assert self.migration_id is not None
        log = cast(logging.Logger, self.log)
        return forward_only_noop(
            self.postgres_conn_id, self.ledger_schema, self.migration_id, self.task_id, log
        )
