"""``QueueDrainTrigger``: waits in the triggerer (``redis.asyncio``) until paused queues have no active job.

Draining can take as long as the slowest job; waiting here holds no worker slot. Only the connection id
is serialized (never credentials), and the deadline is absolute, so a triggerer restart does not
extend the ``drain_timeout``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import pendulum
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_expand.engine.queues.drain import adrain_status, log_drain_status
from airflow_provider_expand.engine.queues.pause import (
    DEFAULT_PREFIX,
    QueueConnectionError,
    QueueError,
    queue_refs,
)
from airflow_provider_expand.hooks.redis import async_redis_client


class QueueDrainTrigger(BaseTrigger):
    """Fires ``drained``, ``timeout`` (at ``deadline``) or ``error``, logging the counts at every poll."""

    def __init__(
        self,
        *,
        redis_conn_id: str,
        queues: list[str],
        deadline: str,
        drain_timeout: float,
        prefix: str = DEFAULT_PREFIX,
        poll_interval: float = 5.0,
    ) -> None:
        super().__init__()
        queue_refs(queues, prefix)  # fail in the worker, not in the triggerer
        self.redis_conn_id = redis_conn_id
        self.queues = list(queues)
        self.prefix = prefix
        self.deadline = pendulum.parse(deadline).isoformat()  # type: ignore[union-attr]
        self.poll_interval = float(poll_interval)
        self.drain_timeout = float(drain_timeout)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "redis_conn_id": self.redis_conn_id,
                "queues": self.queues,
                "deadline": self.deadline,
                "prefix": self.prefix,
                "poll_interval": self.poll_interval,
                "drain_timeout": self.drain_timeout,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        deadline = pendulum.parse(self.deadline)
        timeout = dt.timedelta(seconds=self.drain_timeout)
        try:
            client = await async_redis_client(self.redis_conn_id)
        except Exception as exc:
            yield TriggerEvent(
                {"status": "error", "message": f"Redis connection {self.redis_conn_id!r}: {exc}"}
            )
            return
        try:
            while True:
                try:
                    status = await adrain_status(client, self.queues, prefix=self.prefix)
                except QueueError as exc:
                    message = f"Redis connection {self.redis_conn_id!r}: {exc}"
                    transient = isinstance(exc, QueueConnectionError)  # the sensor's retry can get past it
                    yield TriggerEvent({"status": "error", "message": message, "transient": transient})
                    return
                log_drain_status(status, cast(logging.Logger, self.log))
                if status.drained:
                    yield TriggerEvent({"status": "drained", **status.to_dict()})
                    return
                left = (deadline - pendulum.now("UTC")).total_seconds()  # type: ignore[operator]
                if left <= 0:
                    message = status.timeout_message(timeout)
                    yield TriggerEvent({"status": "timeout", "message": message, **status.to_dict()})
                    return
                await asyncio.sleep(min(self.poll_interval, left))
        finally:
            await client.aclose()  # type: ignore[attr-defined]  # redis>=5; the stubs lag
