"""``QueueDrainSensor``: the runbook's ``while LLEN bull:sync:active > 0; sleep 5`` loop, with a deadline.

Each poke logs active / waiting / delayed per queue and names active jobs whose worker died (no lock
key), so a stuck drain explains itself. ``deferrable=True`` waits in :class:`QueueDrainTrigger`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any, cast

import pendulum
from airflow.sdk import BaseSensorOperator, Context, PokeReturnValue
from airflow.sdk.exceptions import AirflowSensorTimeout

from airflow_provider_expand.engine.queues.drain import DrainStatus, drain_status, log_drain_status
from airflow_provider_expand.engine.queues.pause import (
    DEFAULT_PREFIX,
    QueueConnectionError,
    QueueError,
    QueueNameError,
    QueueRefusedError,
)
from airflow_provider_expand.hooks.redis import redis_client
from airflow_provider_expand.retries import ClassifiedErrors
from airflow_provider_expand.templated import as_bool, check_queues_unless_templated
from airflow_provider_expand.triggers.queues import QueueDrainTrigger


class QueueDrainSensor(ClassifiedErrors, BaseSensorOperator):
    """Succeeds when ``LLEN <prefix>:<name>:active`` is 0 for every queue; fails after ``drain_timeout``.

    ``skip`` (templated, e.g. ``{{ params.skip_queue_drain }}``) succeeds at once with a warning.
    """

    template_fields: Sequence[str] = ("queues", "prefix", "skip")
    ui_color = "#fde2c4"

    def __init__(
        self,
        *,
        redis_conn_id: str,
        queues: list[str],
        drain_timeout: dt.timedelta,
        prefix: str = DEFAULT_PREFIX,
        skip: bool | str = False,
        deferrable: bool = False,
        poke_interval: float | dt.timedelta = 5.0,
        **kwargs: Any,
    ) -> None:
        if not isinstance(drain_timeout, dt.timedelta) or drain_timeout.total_seconds() <= 0:
            raise ValueError(f"drain_timeout must be a positive timedelta, got {drain_timeout!r}")
        kwargs.setdefault("timeout", drain_timeout)
        super().__init__(poke_interval=poke_interval, **kwargs)
        check_queues_unless_templated(queues, prefix)
        self.redis_conn_id = redis_conn_id
        self.queues = queues
        self.prefix = prefix
        self.drain_timeout = drain_timeout
        self.skip = skip
        self.deferrable = deferrable
        self.last_status: DrainStatus | None = None

    def _status(self) -> DrainStatus:
        client = redis_client(self.redis_conn_id)
        try:
            return drain_status(client, self.queues, prefix=self.prefix)
        except QueueNameError:
            raise
        except QueueError as exc:
            raise type(exc)(f"Redis connection {self.redis_conn_id!r}: {exc}") from exc
        finally:
            client.close()

    def poke(self, context: Context) -> bool | PokeReturnValue:
        status = self._status()
        self.last_status = status
        log_drain_status(status, cast(logging.Logger, self.log))
        if status.drained:
            return PokeReturnValue(is_done=True, xcom_value=status.to_dict())
        return False

    def execute(self, context: Context) -> Any:
        if as_bool(self.skip):
            self.log.warning(
                "skip is set (skip_queue_drain): not waiting for queues %s to drain; jobs still running "
                "may meet the schema mid-change",
                ", ".join(self.queues),
            )
            return None
        if self.deferrable:
            done = self.poke(context)
            if isinstance(done, PokeReturnValue):
                return done.xcom_value
            deadline = pendulum.now("UTC") + self.drain_timeout
            self.defer(
                trigger=QueueDrainTrigger(
                    redis_conn_id=self.redis_conn_id,
                    queues=list(self.queues),
                    prefix=self.prefix,
                    deadline=deadline.isoformat(),
                    drain_timeout=self.drain_timeout.total_seconds(),
                    poll_interval=self.poke_interval,
                ),
                method_name="execute_complete",
                timeout=self.drain_timeout + dt.timedelta(minutes=5),  # backstop; the trigger times out first
            )
        try:
            return super().execute(context)
        except AirflowSensorTimeout as exc:
            if self.last_status is None:
                raise
            raise AirflowSensorTimeout(self.last_status.timeout_message(self.drain_timeout)) from exc

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Back from the trigger: succeed on ``drained``, fail with its message otherwise."""
        status = event.get("status")
        if status == "drained":
            self.log.info("queues drained: %s", ", ".join(q["queue"] for q in event.get("queues", [])))
            return {k: v for k, v in event.items() if k != "status"}
        if status == "timeout":
            raise AirflowSensorTimeout(str(event.get("message")))
        message = str(event.get("message") or f"queue drain trigger failed: {event!r}")
        raise (QueueConnectionError if event.get("transient") else QueueRefusedError)(message)
