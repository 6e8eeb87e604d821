"""``LongTransactionTrigger``: waits in the triggerer (async psycopg) until no transaction is too old.

Only the connection id is serialized, never credentials: they are resolved inside ``run()`` from Airflow's
connection store. The deadline is absolute, so a triggerer restart does not extend the wait.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import pendulum
import psycopg
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_expand.engine.errors import TransientError, database_error
from airflow_provider_expand.engine.preflight.checks import (
    along_transactions,
    log_long_transactions,
    long_transactions_timeout_message,
)
from airflow_provider_expand.hooks.postgres import async_postgres_connection


class LongTransactionTrigger(BaseTrigger):
    """Fires ``clear`` once no transaction is older than ``max_transaction_age`` (seconds), ``timeout`` at
    ``deadline`` (ISO 8601) listing those still open, or ``error`` naming the connection.
    """

    def __init__(
        self,
        *,
        postgres_conn_id: str,
        max_transaction_age: float,
        deadline: str,
        wait: float,
        poll_interval: float = 10.0,
    ) -> None:
        super().__init__()
        self.postgres_conn_id = postgres_conn_id
        self.max_transaction_age = float(max_transaction_age)
        self.deadline = pendulum.parse(deadline).isoformat()  # type: ignore[union-attr]
        self.wait = float(wait)
        self.poll_interval = float(poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "postgres_conn_id": self.postgres_conn_id,
                "max_transaction_age": self.max_transaction_age,
                "deadline": self.deadline,
                "wait": self.wait,
                "poll_interval": self.poll_interval,
            },
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LongTransactionTrigger) and self.serialize() == other.serialize()

    def __hash__(self) -> int:
        return hash(self.serialize()[0])

    def _error(self, exc: Exception) -> dict[str, Any]:
        """An ``error`` event; ``transient`` (a lost or refused connection) lets the sensor's retry policy
        try again, anything else (a bad connection id, IAM) fails the task."""
        event: dict[str, Any] = {
            "status": "error",
            "message": f"Postgres connection {self.postgres_conn_id!r}: {exc}",
            "transient": False,
        }
        if isinstance(exc, psycopg.Error):
            wrapped = database_error(exc)
            event.update(transient=isinstance(wrapped, TransientError), sqlstate=wrapped.sqlstate)
        return event

    async def run(self) -> AsyncIterator[TriggerEvent]:
        deadline = pendulum.parse(self.deadline)
        max_age = dt.timedelta(seconds=self.max_transaction_age)
        log = cast(logging.Logger, self.log)
        try:
            conn = await async_postgres_connection(self.postgres_conn_id)
        except Exception as exc:
            yield TriggerEvent(self._error(exc))
            return
        try:
            while True:
                try:
                    transactions = await along_transactions(conn, max_age)
                except psycopg.Error as exc:
                    yield TriggerEvent(self._error(exc))
                    return
                log_long_transactions(transactions, max_age, log)
                if not transactions:
                    yield TriggerEvent({"status": "clear", "max_transaction_age": self.max_transaction_age})
                    return
                left = (deadline - pendulum.now("UTC")).total_seconds()  # type: ignore[operator]
                if left <= 0:
                    message = long_transactions_timeout_message(
                        transactions, max_age, dt.timedelta(seconds=self.wait)
                    )
                    yield TriggerEvent(
                        {
                            "status": "timeout",
                            "message": message,
                            "transactions": [tx.to_json() for tx in transactions],
                        }
                    )
                    return
                await asyncio.sleep(min(self.poll_interval, left))
        finally:
            await conn.close()
