"""``QueueDrainTrigger.run()`` driven directly on asyncio against the test Redis, and its serialization."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import json
import socket
from typing import Any, cast

import pendulum
import pytest
import redis
from airflow.sdk import Context

from airflow_provider_expand.engine.queues.pause import QueueRef
from airflow_provider_expand.triggers.queues import QueueDrainTrigger


def _trigger(prefix: str, *, seconds: float = 10, conn_id: str = "app_redis", **kw: Any) -> QueueDrainTrigger:
    return QueueDrainTrigger(
        redis_conn_id=conn_id,
        queues=["sync"],
        prefix=prefix,
        deadline=(pendulum.now("UTC") + dt.timedelta(seconds=seconds)).isoformat(),
        drain_timeout=seconds,
        poll_interval=kw.pop("poll_interval", 0.1),
        **kw,
    )


async def _first_event(trigger: QueueDrainTrigger, timeout: float = 15) -> dict[str, Any]:
    events = trigger.run()
    try:
        event = await asyncio.wait_for(events.__anext__(), timeout)
    finally:
        await events.aclose()
    return dict(event.payload)


def _queue(client: redis.Redis, prefix: str, active: list[str], locked: list[str]) -> QueueRef:
    ref = QueueRef(prefix, "sync")
    client.hset(ref.key("meta"), mapping={"version": "bullmq:6.7.0", "paused": "1"})
    client.lpush(ref.key("wait"), "5", "6")
    if active:
        client.rpush(ref.key("active"), *active)
    for job in locked:
        client.set(ref.key(f"{job}:lock"), "token", px=60_000)
    return ref


def test_serialize_round_trip_keeps_only_the_connection_id(redis_prefix: str) -> None:
    trigger = _trigger(redis_prefix)
    path, kwargs = trigger.serialize()
    module, _, name = path.rpartition(".")
    again = getattr(importlib.import_module(module), name)(**json.loads(json.dumps(kwargs)))
    assert isinstance(again, QueueDrainTrigger)
    assert again.serialize() == (path, kwargs)
    assert kwargs["redis_conn_id"] == "app_redis"
    assert set(kwargs) == {"redis_conn_id", "queues", "deadline", "prefix", "poll_interval", "drain_timeout"}


def test_bad_queue_name_is_refused_before_deferring(redis_prefix: str) -> None:
    with pytest.raises(ValueError, match=r"'sy nc'"):
        QueueDrainTrigger(
            redis_conn_id="app_redis",
            queues=["sy nc"],
            deadline=pendulum.now("UTC").isoformat(),
            drain_timeout=1,
        )


def test_fires_drained_once_the_last_active_job_finishes(
    airflow_conn: dict[str, str], redis_client: redis.Redis, redis_prefix: str
) -> None:
    ref = _queue(redis_client, redis_prefix, active=["1"], locked=["1"])

    async def scenario() -> tuple[dict[str, Any], bool]:
        waiting = asyncio.ensure_future(_first_event(_trigger(redis_prefix)))
        await asyncio.sleep(0.5)
        still_waiting = not waiting.done()  # an active job holds the trigger
        redis_client.lrem(ref.key("active"), 0, "1")
        return await waiting, still_waiting

    event, held = asyncio.run(scenario())
    assert held
    assert event["status"] == "drained"
    assert event["queues"] == [
        {"queue": ref.label, "active": 0, "waiting": 2, "delayed": 0, "paused": True, "orphaned": []}
    ]


def test_times_out_at_the_deadline_naming_the_dead_workers_job(
    airflow_conn: dict[str, str], redis_client: redis.Redis, redis_prefix: str
) -> None:
    _queue(redis_client, redis_prefix, active=["13", "14"], locked=["14"])
    event = asyncio.run(_first_event(_trigger(redis_prefix, seconds=1)))
    assert event["status"] == "timeout"
    assert "not drained after 0:00:01" in event["message"]
    assert "active job(s) 13 have no lock key" in event["message"]
    assert event["queues"][0]["orphaned"] == ["13"]


def test_unreachable_redis_is_an_error_event_naming_the_connection(
    monkeypatch: pytest.MonkeyPatch, redis_prefix: str
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_DEAD_REDIS", f"redis://127.0.0.1:{port}/0")
    event = asyncio.run(_first_event(_trigger(redis_prefix, conn_id="dead_redis")))
    assert event["status"] == "error" and event["transient"] is True
    assert "'dead_redis'" in event["message"] and ":sync'" in event["message"]

    from airflow_provider_expand.engine.errors import TransientError
    from airflow_provider_expand.sensors.queues import QueueDrainSensor

    sensor = QueueDrainSensor(
        task_id="drain", redis_conn_id="dead_redis", queues=["sync"], drain_timeout=dt.timedelta(seconds=5)
    )
    with pytest.raises(TransientError, match="dead_redis"):  # the retry policy retries it
        sensor.execute_complete(cast(Context, {}), event)
