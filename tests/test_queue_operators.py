"""PauseQueuesOperator, ResumeQueuesOperator and QueueDrainSensor through a real Airflow connection.

``airflow_conn`` sets ``AIRFLOW_CONN_APP_REDIS`` to the test Redis; the tasks get their client from
``RedisHook`` exactly as in a DAG run, and are exercised with ``execute`` / ``poke`` and a bare context.
"""

from __future__ import annotations

import datetime as dt
import socket
from typing import Any, cast

import pytest
import redis
from airflow.sdk import Context, PokeReturnValue
from airflow.sdk.exceptions import AirflowSensorTimeout, TaskDeferred

from airflow_provider_expand.engine.errors import TransientError
from airflow_provider_expand.engine.queues.pause import QueueConnectionError, QueueNameError, QueueRef
from airflow_provider_expand.operators.queues import PauseQueuesOperator, ResumeQueuesOperator
from airflow_provider_expand.sensors.queues import QueueDrainSensor
from airflow_provider_expand.triggers.queues import QueueDrainTrigger
from tests.deploy.images import app_container, app_images, docker_api

__all__ = ["app_container", "app_images", "docker_api"]

CONTEXT = cast(Context, {"run_id": "manual__test-run"})


def _bullmq(
    client: redis.Redis, prefix: str, name: str, *, active: tuple[str, ...] = (), locked: tuple[str, ...] = ()
) -> QueueRef:
    ref = QueueRef(prefix, name)
    client.hset(ref.key("meta"), mapping={"version": "bullmq:5.81.5", "concurrency": "4"})
    client.lpush(ref.key("wait"), "3", "2", "1")
    if active:
        client.rpush(ref.key("active"), *active)
    for job in locked:
        client.set(ref.key(f"{job}:lock"), "token", px=60_000)
    return ref


def _sensor(prefix: str, **kw: Any) -> QueueDrainSensor:
    kw.setdefault("drain_timeout", dt.timedelta(seconds=30))
    kw.setdefault("redis_conn_id", "app_redis")
    return QueueDrainSensor(task_id="drain", queues=["sync"], prefix=prefix, **kw)


def test_pause_and_resume_operators_leave_an_already_paused_queue_paused(
    airflow_conn: dict[str, str], redis_client: redis.Redis, redis_prefix: str
) -> None:
    sync = _bullmq(redis_client, redis_prefix, "sync")
    mail = _bullmq(redis_client, redis_prefix, "mail")
    redis_client.hset(mail.key("meta"), "paused", 1)  # paused by a person before the migration
    redis_client.rename(mail.key("wait"), mail.key("paused"))
    common: dict[str, Any] = {"migration_id": "m1", "redis_conn_id": "app_redis", "prefix": redis_prefix}

    paused = PauseQueuesOperator(task_id="pause", queues=["sync", "mail"], **common).execute(CONTEXT)
    assert [(r["queue"].split(":")[1], r["action"]) for r in paused] == [
        ("sync", "paused"),
        ("mail", "already_paused"),
    ]
    assert redis_client.hget(sync.key("meta"), "paused") == b"1"

    resumed = ResumeQueuesOperator(task_id="resume", queues=["sync", "mail"], **common).execute(CONTEXT)
    assert [r["action"] for r in resumed] == ["resumed", "not_ours"]
    assert redis_client.hget(sync.key("meta"), "paused") is None
    assert redis_client.hget(mail.key("meta"), "paused") == b"1"
    assert redis_client.llen(mail.key("paused")) == 3


def test_dry_run_flag_from_a_rendered_template(
    airflow_conn: dict[str, str], redis_client: redis.Redis, redis_prefix: str
) -> None:
    ref = _bullmq(redis_client, redis_prefix, "sync")
    op = PauseQueuesOperator(
        task_id="pause", migration_id="m1", redis_conn_id="app_redis", queues=["sync"], prefix=redis_prefix
    )
    op.is_dry_run = "True"  # what "{{ params.dry_run }}" renders to
    assert [r["action"] for r in op.execute(CONTEXT)] == ["would_pause"]
    assert redis_client.hget(ref.key("meta"), "paused") is None


def test_bad_names_fail_when_the_dag_is_parsed() -> None:
    with pytest.raises(QueueNameError, match=r"'sync\*'"):
        PauseQueuesOperator(task_id="p", migration_id="m", redis_conn_id="r", queues=["sync*"])
    with pytest.raises(QueueNameError, match="empty"):
        QueueDrainSensor(task_id="d", redis_conn_id="r", queues=[""], drain_timeout=dt.timedelta(minutes=1))
    # Still templated: checked after rendering instead.
    PauseQueuesOperator(task_id="p", migration_id="m", redis_conn_id="r", queues=["{{ params.q }}"])


def test_unreachable_redis_names_the_connection_and_queue(
    monkeypatch: pytest.MonkeyPatch, redis_prefix: str
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_DEAD_REDIS", f"redis://127.0.0.1:{port}/0")
    op = PauseQueuesOperator(
        task_id="pause", migration_id="m1", redis_conn_id="dead_redis", queues=["sync"], prefix=redis_prefix
    )
    with pytest.raises(QueueConnectionError, match=r"Redis connection 'dead_redis'.*queue '[^']+:sync'"):
        op.execute(CONTEXT)
    with pytest.raises(QueueConnectionError, match="'dead_redis'"):
        _sensor(redis_prefix, redis_conn_id="dead_redis").poke(CONTEXT)
    resume = ResumeQueuesOperator(
        task_id="resume", migration_id="m1", redis_conn_id="dead_redis", queues=["sync"], prefix=redis_prefix
    )
    with pytest.raises(TransientError, match=r"'dead_redis': resume incomplete"):  # retried by the policy
        resume.execute(CONTEXT)


def test_resume_whose_ledger_does_not_answer_fails_transiently(
    monkeypatch: pytest.MonkeyPatch, airflow_conn: dict[str, str], redis_prefix: str
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_DEAD_DB", f"postgresql://postgres@127.0.0.1:{port}/postgres")
    resume = ResumeQueuesOperator(
        task_id="resume",
        migration_id="m1",
        redis_conn_id="app_redis",
        queues=["sync"],
        prefix=redis_prefix,
        postgres_conn_id="dead_db",
    )
    with pytest.raises(TransientError):  # the gate cannot be read: retry rather than guess
        resume.execute(CONTEXT)


def test_sensor_reports_active_jobs_then_succeeds_when_they_finish(
    airflow_conn: dict[str, str], redis_client: redis.Redis, redis_prefix: str
) -> None:
    ref = _bullmq(redis_client, redis_prefix, "sync", active=("1", "2"), locked=("1", "2"))
    sensor = _sensor(redis_prefix)
    assert sensor.poke(CONTEXT) is False
    assert sensor.last_status is not None and sensor.last_status.active == 2
    assert sensor.last_status.snapshots[0].orphaned == ()

    redis_client.delete(ref.key("active"))
    done = sensor.poke(CONTEXT)
    assert isinstance(done, PokeReturnValue) and done.is_done
    assert done.xcom_value["queues"][0]["active"] == 0


def test_sensor_fails_after_drain_timeout_naming_the_orphaned_job(
    airflow_conn: dict[str, str], redis_client: redis.Redis, redis_prefix: str
) -> None:
    _bullmq(redis_client, redis_prefix, "sync", active=("13",))
    sensor = _sensor(redis_prefix, drain_timeout=dt.timedelta(seconds=1), poke_interval=0.2)
    with pytest.raises(
        AirflowSensorTimeout, match=r"not drained after 0:00:01.*active job\(s\) 13 have no lock"
    ):
        sensor.execute(CONTEXT)


@pytest.mark.parametrize("skip", [True, "True", "true"])
def test_skip_succeeds_at_once(
    airflow_conn: dict[str, str], redis_client: redis.Redis, redis_prefix: str, skip: bool | str
) -> None:
    _bullmq(redis_client, redis_prefix, "sync", active=("1",), locked=("1",))
    assert _sensor(redis_prefix, skip=skip).execute(CONTEXT) is None


def test_skip_that_is_not_a_boolean_is_refused(redis_prefix: str) -> None:
    with pytest.raises(ValueError, match="boolean"):
        _sensor(redis_prefix, skip="sometimes").execute(CONTEXT)


def test_deferrable_sensor_defers_to_the_trigger_and_completes_from_its_event(
    airflow_conn: dict[str, str], redis_client: redis.Redis, redis_prefix: str
) -> None:
    ref = _bullmq(redis_client, redis_prefix, "sync", active=("1",), locked=("1",))
    sensor = _sensor(redis_prefix, deferrable=True, poke_interval=2)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(CONTEXT)
    trigger = deferred.value.trigger
    assert isinstance(trigger, QueueDrainTrigger)
    assert trigger.serialize()[1]["redis_conn_id"] == "app_redis"
    assert (trigger.queues, trigger.prefix, trigger.poll_interval) == (["sync"], redis_prefix, 2.0)
    assert deferred.value.method_name == "execute_complete"

    event = {"status": "drained", "drained": True, "queues": [{"queue": ref.label, "active": 0}]}
    assert sensor.execute_complete(CONTEXT, event)["drained"] is True
    with pytest.raises(AirflowSensorTimeout, match="not drained after"):
        sensor.execute_complete(CONTEXT, {"status": "timeout", "message": "queues not drained after 0:30:00"})

    # Already drained: no deferral at all.
    redis_client.delete(ref.key("active"))
    assert sensor.execute(CONTEXT)["drained"] is True


def test_resume_acts_only_for_the_run_that_paused(
    airflow_conn: dict[str, str], redis_client: redis.Redis, redis_prefix: str
) -> None:
    sync = _bullmq(redis_client, redis_prefix, "sync")
    common: dict[str, Any] = {"migration_id": "m1", "redis_conn_id": "app_redis", "prefix": redis_prefix}
    run1, run2 = cast(Context, {"run_id": "run-1"}), cast(Context, {"run_id": "run-2"})
    PauseQueuesOperator(task_id="pause", queues=["sync"], **common).execute(run1)

    resume = ResumeQueuesOperator(task_id="resume", queues=["sync"], **common)
    assert [r["action"] for r in resume.execute(run2)] == ["not_ours"]
    assert redis_client.hget(sync.key("meta"), "paused") == b"1"
    assert [r["action"] for r in resume.execute(run1)] == ["resumed"]
    assert not redis_client.exists(sync.key("airflow-expand:paused-by"))
    with pytest.raises(ValueError, match="run_id"):
        resume.execute(cast(Context, {}))


def test_resume_leaves_the_queues_to_a_rollback_the_ledger_shows_coming(
    airflow_conn: dict[str, str], redis_client: redis.Redis, redis_prefix: str, pg_conn: Any
) -> None:
    from airflow_provider_expand.engine.ledger.store import Ledger

    sync = _bullmq(redis_client, redis_prefix, "sync")
    common: dict[str, Any] = {"migration_id": "m1", "redis_conn_id": "app_redis", "prefix": redis_prefix}
    PauseQueuesOperator(task_id="pause", queues=["sync"], **common).execute(CONTEXT)
    ledger = Ledger()
    ledger.ensure(pg_conn)
    ledger.start_step(pg_conn, "m1", "deploy")
    ledger.finish_step(pg_conn, "m1", "deploy", status="failed", error="health check failed")
    resume = ResumeQueuesOperator(task_id="resume", queues=["sync"], postgres_conn_id="app_db", **common)

    assert [r["action"] for r in resume.execute(CONTEXT)] == ["held_by_rollback"]
    assert redis_client.hget(sync.key("meta"), "paused") == b"1"

    ledger.start_step(pg_conn, "m1", "rollback:deploy")
    ledger.finish_step(pg_conn, "m1", "rollback:deploy")  # the old container is back
    assert [r["action"] for r in resume.execute(CONTEXT)] == ["resumed"]


def test_a_failed_container_swap_keeps_the_queues_paused_until_the_rollbacks_retry(
    airflow_conn: dict[str, str],
    redis_client: redis.Redis,
    redis_prefix: str,
    pg_conn: Any,
    docker_api: Any,
    app_images: Any,
    app_container: Any,
) -> None:
    """The container swap fails for real (no such container): which code runs is unknown, so the queue stays
    paused under the rollback's marker and queues.resume leaves it; the rollback's retry (same run) puts the
    container back and resumes it."""
    from airflow_provider_expand.engine.deploy.release import DEPLOY_STEP
    from airflow_provider_expand.engine.ledger.store import Ledger
    from airflow_provider_expand.operators.deploy import DockerDeployOperator
    from tests.deploy.images import DOCKER_URL

    sync = _bullmq(redis_client, redis_prefix, "sync")
    common: dict[str, Any] = {"migration_id": "m1", "redis_conn_id": "app_redis", "prefix": redis_prefix}
    PauseQueuesOperator(task_id="pause", queues=["sync"], **common).execute(CONTEXT)
    ledger = Ledger()
    ledger.ensure(pg_conn)
    ledger.start_step(pg_conn, "m1", DEPLOY_STEP)
    with pg_conn.transaction(), pg_conn.cursor() as cur:
        ledger.checkpoint(cur, "m1", DEPLOY_STEP, 0, last_key=app_images.v1, rows_added=0)
    ledger.finish_step(pg_conn, "m1", DEPLOY_STEP, status="failed", error="health check failed")
    hold = {**{k: common[k] for k in ("redis_conn_id", "prefix")}, "queues": ["sync"]}
    hold["drain_timeout"] = dt.timedelta(seconds=5)

    def rollback(container: str) -> DockerDeployOperator:
        return DockerDeployOperator(
            task_id="rollback",
            migration_id="m1",
            postgres_conn_id="app_db",
            container=container,
            health_url=f"{app_container.url}/health/ready",
            health_timeout=dt.timedelta(seconds=20),
            docker_url=DOCKER_URL,
            rollback=True,
            queues=hold,
        )

    with pytest.raises(Exception, match="expandtest-nosuch"):
        rollback("expandtest-nosuch").execute(CONTEXT)
    assert redis_client.hget(sync.key("meta"), "paused") == b"1"
    assert b'"holder": "rollback"' in (redis_client.get(sync.key("airflow-expand:paused-by")) or b"")
    resume = ResumeQueuesOperator(task_id="resume", queues=["sync"], postgres_conn_id="app_db", **common)
    assert [r["action"] for r in resume.execute(CONTEXT)] == ["held_by_rollback"]
    assert redis_client.hget(sync.key("meta"), "paused") == b"1"

    rollback(app_container.name).execute(CONTEXT)  # the retry, once the engine finds the container

    assert redis_client.hget(sync.key("meta"), "paused") is None
    assert not redis_client.exists(sync.key("airflow-expand:paused-by"))
    assert [r["action"] for r in resume.execute(CONTEXT)] == ["not_ours"]  # the teardown after it
