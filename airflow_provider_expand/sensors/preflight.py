"""``LongTransactionSensor``: the runbook's pre-migration checklist (connections, long transactions, load).

It checks once per try (no pooler in transaction mode in between, server version, connection headroom,
machine load, Redis clients, room for the backup) and then waits while a transaction older than
``max_transaction_age`` is open, for at most ``wait``: DDL behind such a transaction would queue the
application behind its lock.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any, cast

import pendulum
from airflow.sdk import BaseSensorOperator, Context
from airflow.sdk.exceptions import AirflowSensorTimeout

from airflow_provider_expand.engine.backup.store import is_url
from airflow_provider_expand.engine.errors import DatabaseUnavailableError
from airflow_provider_expand.engine.preflight.checks import (
    LongTransaction,
    PreflightError,
    PreflightReport,
    log_long_transactions,
    long_transactions,
    long_transactions_timeout_message,
    run_preflight,
)
from airflow_provider_expand.hooks.postgres import postgres_connector
from airflow_provider_expand.hooks.redis import redis_client
from airflow_provider_expand.retries import ClassifiedErrors
from airflow_provider_expand.triggers.preflight import LongTransactionTrigger


class LongTransactionSensor(ClassifiedErrors, BaseSensorOperator):
    """Preflight checks, then waits until no non-idle transaction in the target database is older than
    ``max_transaction_age``; fails after ``wait`` listing the ones still open.

    ``deferrable=True`` waits in :class:`LongTransactionTrigger`, holding no worker slot.
    """

    template_fields: Sequence[str] = ("backup_directory",)
    ui_color = "#e8e0f5"

    def __init__(
        self,
        *,
        postgres_conn_id: str,
        max_transaction_age: dt.timedelta,
        wait: dt.timedelta,
        redis_conn_id: str | None = None,
        backup_directory: str | None = None,
        space_margin: float = 0.10,
        connections_warn_at: float = 0.80,
        connections_fail_at: float = 0.95,
        deferrable: bool = False,
        poke_interval: float | dt.timedelta = 10.0,
        **kwargs: Any,
    ) -> None:
        for name, value in (("max_transaction_age", max_transaction_age), ("wait", wait)):
            if not isinstance(value, dt.timedelta) or value.total_seconds() <= 0:
                raise ValueError(f"{name} must be a positive timedelta, got {value!r}")
        if not 0 <= connections_warn_at <= connections_fail_at:
            raise ValueError(
                f"connections_warn_at ({connections_warn_at}) must be between 0 and "
                f"connections_fail_at ({connections_fail_at})"
            )
        kwargs.setdefault("timeout", wait)
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.postgres_conn_id = postgres_conn_id
        self.max_transaction_age = max_transaction_age
        self.wait = wait
        self.redis_conn_id = redis_conn_id
        self.backup_directory = backup_directory
        self.space_margin = space_margin
        self.connections_warn_at = connections_warn_at
        self.connections_fail_at = connections_fail_at
        self.deferrable = deferrable
        self.last_transactions: list[LongTransaction] | None = None

    @property
    def _log(self) -> logging.Logger:
        return cast(logging.Logger, self.log)

    def preflight(self) -> PreflightReport:
        """Pooler, version, headroom, load, Redis and backup space: raises :class:`PreflightError` on a
        blocker; a silent Redis is transient, and so is a lost connection (``ClassifiedErrors`` wraps it)."""
        client = None
        if self.redis_conn_id:
            try:  # builds the client from the Airflow connection; nothing is sent yet
                client = redis_client(self.redis_conn_id)
            except Exception as exc:
                raise PreflightError(f"Redis connection {self.redis_conn_id!r}: {exc}") from exc
        local_backup = self.backup_directory or None
        if local_backup is not None and is_url(local_backup):
            # an object store has no free-space figure to check: the dump streams there
            self._log.info("backup directory %s is object storage: no disk space check", local_backup)
            local_backup = None
        connect = postgres_connector(self.postgres_conn_id)
        try:
            with connect() as conn:
                conn.autocommit = True
                return run_preflight(
                    conn,
                    self._log,
                    connect=connect,
                    backup_directory=local_backup,
                    space_margin=self.space_margin,
                    redis_client=client,
                    redis_name=self.redis_conn_id or "redis",
                    connections_warn_at=self.connections_warn_at,
                    connections_fail_at=self.connections_fail_at,
                )
        finally:
            if client is not None:
                client.close()

    def poke(self, context: Context) -> bool:
        """One connection, one query: the checks ran before the first poke."""
        with postgres_connector(self.postgres_conn_id)() as conn:
            conn.autocommit = True
            transactions = long_transactions(conn, self.max_transaction_age)
        self.last_transactions = transactions
        log_long_transactions(transactions, self.max_transaction_age, self._log)
        return not transactions

    def execute(self, context: Context) -> None:
        if not (self.reschedule and context.get("task_reschedule_count", 0)):
            self.preflight()  # once per try: a rescheduled poke of the same try does not repeat it
        if self.deferrable:
            if self.poke(context):
                return
            deadline = pendulum.now("UTC") + self.wait
            self.log.info("waiting up to %s in the triggerer (no worker slot held)", self.wait)
            self.defer(
                trigger=LongTransactionTrigger(
                    postgres_conn_id=self.postgres_conn_id,
                    max_transaction_age=self.max_transaction_age.total_seconds(),
                    deadline=deadline.isoformat(),
                    wait=self.wait.total_seconds(),
                    poll_interval=float(self.poke_interval),
                ),
                method_name="execute_complete",
                timeout=self.wait + dt.timedelta(minutes=5),  # backstop; the trigger times out first
            )
        try:
            super().execute(context)
        except AirflowSensorTimeout as exc:
            if not self.last_transactions:
                raise
            message = long_transactions_timeout_message(
                self.last_transactions, self.max_transaction_age, self.wait
            )
            raise AirflowSensorTimeout(message) from exc

    def execute_complete(self, context: Context, event: dict[str, Any]) -> None:
        """Back from the trigger: succeed on ``clear``, fail with its message otherwise."""
        status = event.get("status")
        if status == "clear":
            self.log.info("no transaction older than %s is left: preflight passed", self.max_transaction_age)
            return
        if status == "timeout":
            raise AirflowSensorTimeout(str(event.get("message")))
        if event.get("transient"):
            raise DatabaseUnavailableError(str(event.get("message")), event.get("sqlstate"))
        raise PreflightError(str(event.get("message") or f"long-transaction trigger failed: {event!r}"))
