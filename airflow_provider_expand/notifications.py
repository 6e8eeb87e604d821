"""``MigrationNotifier``: the spec's ``notify:`` as an Airflow notifier (the runbook's T+30 'Notifică tech
lead'), sent on failure, on rollback and on completion with the run's timeline read from the ledger — and,
as an Airflow Deadline Alert's callback in the triggerer, when a run passes its expected time."""

from __future__ import annotations

import asyncio
import html
from collections.abc import Sequence
from typing import Any, Literal

from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import DAG, BaseNotifier, BaseOperator, Context

# airflow.sdk exports these too, but its type stub (__init__.pyi) does not list them yet
from airflow.sdk.definitions.callback import AsyncCallback
from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

from airflow_provider_expand.engine.ledger.store import DEFAULT_SCHEMA, Ledger
from airflow_provider_expand.engine.ledger.timeline import timeline
from airflow_provider_expand.engine.redact import without_query_texts
from airflow_provider_expand.hooks.postgres import postgres_connector
from airflow_provider_expand.masking import masked_text
from airflow_provider_expand.spec import MigrationSpec, format_duration

Event = Literal["failure", "rollback", "completion", "deadline"]
DEFAULT_FROM = "airflow-expand@localhost"


class MigrationNotifier(BaseNotifier):
    """Mails ``to`` through the SMTP provider's notifier; the body is the ledger's timeline of the run."""

    def __init__(
        self,
        *,
        event: Event,
        migration_id: str,
        postgres_conn_id: str,
        to: Sequence[str],
        smtp_conn_id: str = "smtp_default",
        from_email: str | None = None,
        ledger_schema: str = DEFAULT_SCHEMA,
        expected: str | None = None,
        context: Context | None = None,
    ) -> None:
        super().__init__(context=context)
        self.event = event
        self.migration_id = migration_id
        self.postgres_conn_id = postgres_conn_id
        self.to = list(to)
        self.smtp_conn_id = smtp_conn_id
        self.from_email = from_email
        self.ledger_schema = ledger_schema
        self.expected = expected

    def message(self, context: Context) -> tuple[str, str]:
        """Subject and plain-text body: registered secrets, URL user info and query texts left out (a mail
        passes no log masker, and leaves the machine)."""
        ledger = Ledger(self.ledger_schema)
        try:
            with postgres_connector(self.postgres_conn_id)() as conn:
                installed = ledger.installed(conn)
                record = ledger.get(conn, self.migration_id) if installed else None
                steps = ledger.steps(conn, self.migration_id) if installed else []
            text = timeline(self.migration_id, record, steps)
        except Exception as exc:  # the mail still goes out: the database may be what failed
            text = f"migration {self.migration_id}: ledger unreadable ({exc})"
        ti: Any = context.get("ti") or context.get("task_instance")
        run: Any = context.get("dag_run")
        where = f"task {ti.task_id}" if ti is not None else "the run"
        headline = {
            "failure": f"FAILED at {where}",
            "rollback": "ROLLED BACK",
            "completion": "completed",
            "deadline": f"still running after its expected {self.expected or 'time'}",
        }[self.event]
        subject = f"[airflow-expand] {self.migration_id} {headline}"
        exception = context.get("exception")
        # a Deadline Alert's context carries the run as the REST API's JSON
        run_id = run.get("dag_run_id") if isinstance(run, dict) else getattr(run, "run_id", None)
        body = [subject, f"run: {run_id or '-'}"]
        if exception is not None:
            body.append(f"error: {exception}")
        return subject, masked_text(without_query_texts("\n".join([*body, "", text])))

    def _smtp(self, subject: str, body: str) -> SmtpNotifier:
        return SmtpNotifier(
            to=self.to,
            from_email=self.from_email or DEFAULT_FROM,
            subject=subject,
            html_content=f"<pre>{html.escape(body)}</pre>",
            smtp_conn_id=self.smtp_conn_id,
        )

    def notify(self, context: Context) -> None:
        self._smtp(*self.message(context)).notify(context)
        self.log.info("sent %s notification for %s to %s", self.event, self.migration_id, ", ".join(self.to))

    async def async_notify(self, context: Context) -> None:
        """In the triggerer (a Deadline Alert): the ledger is read off the event loop, the mail sent async."""
        subject, body = await asyncio.to_thread(self.message, context)
        await self._smtp(subject, body).async_notify(context)
        self.log.info("sent %s notification for %s to %s", self.event, self.migration_id, ", ".join(self.to))


def deadline_alert(spec: MigrationSpec) -> DeadlineAlert | None:
    """``notify.deadline``: a run not finished that long after it was queued mails the spec's recipients."""
    notify = spec.notify
    if notify is None or notify.smtp is None or notify.deadline is None:
        return None
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=notify.deadline,
        callback=AsyncCallback(
            MigrationNotifier,
            kwargs={
                "event": "deadline",
                "migration_id": spec.id,
                "postgres_conn_id": spec.postgres_conn_id,
                "to": list(notify.smtp.to),
                "smtp_conn_id": notify.smtp.conn_id,
                "from_email": notify.smtp.from_email,
                "ledger_schema": spec.ledger_schema,
                "expected": format_duration(notify.deadline),
            },
        ),
    )


def attach_notifiers(
    spec: MigrationSpec, dag: DAG, *, done: BaseOperator, rollback: BaseOperator | None
) -> None:
    """Task callbacks from ``spec.notify``: any task failing, the rollback finishing, ``done`` (completed)."""
    notify = spec.notify
    if notify is None or notify.smtp is None:
        return
    smtp = notify.smtp

    def notifier(event: Event) -> MigrationNotifier:
        return MigrationNotifier(
            event=event,
            migration_id=spec.id,
            postgres_conn_id=spec.postgres_conn_id,
            to=list(smtp.to),
            smtp_conn_id=smtp.conn_id,
            from_email=smtp.from_email,
            ledger_schema=spec.ledger_schema,
        )

    if "failure" in notify.events:
        for task in dag.tasks:
            task.on_failure_callback = [notifier("failure")]
    if "rollback" in notify.events and rollback is not None:
        rollback.on_success_callback = [notifier("rollback")]
    if "completion" in notify.events:
        done.on_success_callback = [notifier("completion")]
