"""``ContractApprovalOperator``: between the soak and the contract, a person decides in the UI's Required
Actions — contract now, wait, or roll back — through the standard provider's HITL operator (the task waits
holding no worker slot). Every answer, and who gave it, goes into the ledger's decisions.

"Wait", or no answer within the timeout, keeps the migration soaking and asks again; only a person's
"Roll back" fails the task, which sends the migration down the rollback branch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Context

from airflow_provider_expand.engine.errors import DefinitiveError
from airflow_provider_expand.engine.ledger.decisions import Decisions
from airflow_provider_expand.engine.ledger.overview import APPROVAL_STEP
from airflow_provider_expand.engine.ledger.store import DEFAULT_SCHEMA, Ledger, StepStatus
from airflow_provider_expand.guards import forward_only_noop
from airflow_provider_expand.hooks.postgres import postgres_connector
from airflow_provider_expand.retries import ClassifiedErrors
from airflow_provider_expand.spec.durations import format_duration
from airflow_provider_expand.templated import as_bool

CONTRACT, WAIT, ROLL_BACK = "Contract now", "Wait", "Roll back"
DECISION = "contract approval"
# who the ledger names when the timeout answered (the HITL detail then has no responding user)
NO_ANSWER = "nobody (timeout)"


class ContractRolledBackByPersonError(DefinitiveError):
    """A person chose to roll back instead of contracting: the rollback branch runs."""


def _user(answer: Any) -> str:
    user = answer.get("responded_by_user") if isinstance(answer, dict) else None
    if not user:
        return NO_ANSWER
    return str(user.get("name") or user.get("id"))


class ContractApprovalOperator(ClassifiedErrors, HITLOperator):
    """Asks whether to contract now; records each answer; asks again after a wait or a timeout."""

    template_fields: Sequence[str] = (*HITLOperator.template_fields, "is_dry_run")

    def __init__(
        self,
        *,
        migration_id: str,
        postgres_conn_id: str,
        timeout: dt.timedelta,
        approvers: Sequence[str] = (),
        ledger_schema: str = DEFAULT_SCHEMA,
        dry_run: bool | str = False,
        **kwargs: Any,
    ) -> None:
        who = ", ".join(approvers) if approvers else "anyone who may act on this DAG"
        super().__init__(
            subject=f"Contract {migration_id} now?",
            body=(
                f"The soak of **{migration_id}** is over. **{CONTRACT}** runs contract.sql: from then on the "
                f"migration is forward-only. **{WAIT}** keeps it soaking and asks again in "
                f"{format_duration(timeout)} (no answer counts as {WAIT}). **{ROLL_BACK}** undoes the expand "
                f"and puts the old code back.\n\nWho may answer: {who}."
            ),
            options=[CONTRACT, WAIT, ROLL_BACK],
            defaults=[WAIT],
            multiple=False,
            assigned_users=[{"id": name, "name": name} for name in approvers] or None,
            response_timeout=timeout,
            **kwargs,
        )
        self.migration_id = migration_id
        self.postgres_conn_id = postgres_conn_id
        self.approvers = list(approvers)
        self.ledger_schema = ledger_schema
        self.is_dry_run = dry_run

    def execute(self, context: Context) -> Any:
        if as_bool(self.is_dry_run):
            self.log.info("dry run: would ask whether to contract %s", self.migration_id)
            return None
        if forward_only_noop(
            self.postgres_conn_id, self.ledger_schema, self.migration_id, "approval", self.log
        ):
            return None
        ledger = Ledger(self.ledger_schema)
        with postgres_connector(self.postgres_conn_id)() as conn:
            conn.autocommit = True
            asked = [s for s in ledger.steps(conn, self.migration_id) if s.step == APPROVAL_STEP]
            round_ = max((s.part for s in asked if s.status != "running"), default=0) + 1
            if not any(s.status == "running" for s in asked):
                ledger.start_step(conn, self.migration_id, APPROVAL_STEP, round_)
        self.log.info("asking (round %d) whether to contract %s: Required Actions", round_, self.migration_id)
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        answer = super().execute_complete(context, event)
        choice = answer["chosen_options"][0]
        actor = _user(answer)
        run = context.get("dag_run")
        ledger = Ledger(self.ledger_schema)
        with postgres_connector(self.postgres_conn_id)() as conn:
            conn.autocommit = True
            running = [
                s
                for s in ledger.steps(conn, self.migration_id)
                if s.step == APPROVAL_STEP and s.status == "running"
            ]
            Decisions(self.ledger_schema).record(
                conn,
                self.migration_id,
                kind=DECISION,
                choice=choice,
                actor=actor,
                detail=f"round {running[0].part}" if running else None,
                run_id=getattr(run, "run_id", None),
            )
            status: StepStatus = "failed" if choice == ROLL_BACK else "success"
            for step in running:
                ledger.finish_step(conn, self.migration_id, APPROVAL_STEP, step.part, status=status)
        self.log.info("%s chose %r for %s", actor, choice, self.migration_id)
        if choice == CONTRACT:
            return {"choice": choice, "by": actor}
        if choice == ROLL_BACK:
            raise ContractRolledBackByPersonError(
                f"{actor} chose to roll back {self.migration_id} instead of contracting it"
            )
        return self.execute(context)  # wait (or no answer): still soaking, ask again
