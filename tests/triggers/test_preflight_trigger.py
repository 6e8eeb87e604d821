"""``LongTransactionTrigger.run()`` driven directly (asyncio) against a real PostgreSQL, and its serialization."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from typing import Any

import pendulum
import psycopg
import pytest
from airflow.sdk.module_loading import import_string
from airflow.sdk.serde import deserialize, serialize
from airflow.triggers.base import TriggerEvent

from airflow_provider_expand.engine.database import Connector
from airflow_provider_expand.triggers.preflight import LongTransactionTrigger


def _trigger(
    deadline_in: dt.timedelta = dt.timedelta(minutes=1), conn_id: str = "app_db"
) -> LongTransactionTrigger:
    return LongTransactionTrigger(
        postgres_conn_id=conn_id,
        max_transaction_age=1.0,
        deadline=(pendulum.now("UTC") + deadline_in).isoformat(),
        wait=deadline_in.total_seconds(),
        poll_interval=0.2,
    )


def _old_transaction(connect: Connector) -> psycopg.Connection:
    conn = connect()
    conn.execute("SELECT 'nightly report'")
    time.sleep(1.2)
    return conn


async def _first_event(trigger: LongTransactionTrigger, timeout: float = 20) -> TriggerEvent:
    events = trigger.run()
    try:
        return await asyncio.wait_for(events.__anext__(), timeout)
    finally:
        await events.aclose()  # runs the trigger's cleanup (closes its connection)


def test_yields_clear_once_the_old_transaction_ends(
    airflow_conn: dict[str, str], pg_connect: Connector
) -> None:
    async def scenario(old: psycopg.Connection) -> TriggerEvent:
        waiting = asyncio.ensure_future(_first_event(_trigger()))
        await asyncio.sleep(1.0)
        assert not waiting.done()  # held by the old transaction
        old.commit()
        return await waiting

    with _old_transaction(pg_connect) as old:
        event = asyncio.run(scenario(old))
    assert event.payload == {"status": "clear", "max_transaction_age": 1.0}


def test_times_out_at_the_deadline_naming_the_transaction(
    airflow_conn: dict[str, str], pg_connect: Connector
) -> None:
    with _old_transaction(pg_connect) as old:
        event = asyncio.run(_first_event(_trigger(dt.timedelta(seconds=0.5))))
        pid = old.info.backend_pid
    assert event.payload["status"] == "timeout"
    assert [t["pid"] for t in event.payload["transactions"]] == [pid]
    assert event.payload["transactions"][0]["query"] == "SELECT 'nightly report'"
    assert f"pid {pid}" in event.payload["message"]


def test_bad_connection_gives_an_error_event_naming_it(airflow_conn: dict[str, str]) -> None:
    event = asyncio.run(_first_event(_trigger(conn_id="no_such_conn")))
    assert event.payload["status"] == "error" and "'no_such_conn'" in event.payload["message"]
    assert event.payload["transient"] is False  # a missing connection id: no retry fixes it


def test_a_terminated_connection_gives_a_transient_error_event(
    airflow_conn: dict[str, str], pg_connect: Connector, pg_conn: psycopg.Connection
) -> None:
    async def scenario() -> TriggerEvent:
        waiting = asyncio.ensure_future(_first_event(_trigger()))
        await asyncio.sleep(1.0)
        killed = pg_conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'airflow-expand-preflight'"
        ).fetchall()
        assert killed == [(True,)]
        return await waiting

    with _old_transaction(pg_connect):
        event = asyncio.run(scenario())
    assert event.payload["status"] == "error" and event.payload["transient"] is True, event.payload


def test_serialize_round_trip_rebuilds_an_equal_trigger() -> None:
    trigger = _trigger()
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_expand.triggers.preflight.LongTransactionTrigger"
    stored: Any = deserialize(json.loads(json.dumps(serialize(kwargs))))  # as the triggerer stores it
    rebuilt = import_string(classpath)(**stored)
    assert rebuilt == trigger and rebuilt.serialize() == (classpath, kwargs)
    assert set(kwargs) == {"postgres_conn_id", "max_transaction_age", "deadline", "wait", "poll_interval"}
    with pytest.raises(ValueError):
        LongTransactionTrigger(postgres_conn_id="x", max_transaction_age=1, deadline="not a date", wait=1)
