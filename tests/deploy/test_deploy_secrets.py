"""The deploy operators given a ``health_url`` and ``metrics_url`` with credentials, against a real Docker
engine, a real ledger and a Basic-auth HTTP server on loopback: the password reaches none of the logs, the
rendered fields, the XComs or the ledger, and the credentials are still sent where they belong."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator
from typing import Any, cast

import psycopg
import pytest
from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowFailException
from airflow.sdk.execution_time.task_runner import _serialize_rendered_fields
from docker import APIClient

from airflow_provider_expand.engine.deploy.docker_client import HealthCheckFailed
from airflow_provider_expand.engine.ledger.store import Ledger
from airflow_provider_expand.engine.lifecycle import Event, Lifecycle
from airflow_provider_expand.operators.deploy import DockerDeployOperator
from airflow_provider_expand.sensors.deploy_watch import DeployWatchSensor
from tests.deploy.images import DOCKER_URL, AppContainer, AppImages
from tests.secret_urls import PASSWORD, USER, AuthServer, ledger_text

CONTEXT = cast(Context, {})


@pytest.fixture
def auth_server() -> Iterator[AuthServer]:
    server = AuthServer()
    yield server
    server.close()


def _health(app: AppContainer) -> str:
    # busybox httpd ignores the Authorization header: the health check passes with credentials sent
    return f"http://{USER}:{PASSWORD}@127.0.0.1:{app.port}/health/ready"


def _deploy_op(app: AppContainer, **kwargs: Any) -> DockerDeployOperator:
    return DockerDeployOperator(
        task_id="deploy",
        migration_id="m1",
        postgres_conn_id="app_db",
        container=app.name,
        health_url=_health(app),
        docker_url=DOCKER_URL,
        **{"health_timeout": dt.timedelta(seconds=20), **kwargs},
    )


def test_deploy_rollback_and_watch_keep_the_password_out(
    docker_api: APIClient,
    app_images: AppImages,
    app_container: AppContainer,
    airflow_conn: dict[str, str],
    pg_conn: psycopg.Connection,
    auth_server: AuthServer,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    ledger = Ledger()
    ledger.ensure(pg_conn)
    Lifecycle(ledger).move(pg_conn, "m1", Event.EXPAND_STARTED)
    Lifecycle(ledger).move(pg_conn, "m1", Event.EXPANDED)
    outputs: list[object] = []
    with caplog.at_level(logging.DEBUG):
        failing = _deploy_op(app_container, image=app_images.v3, health_timeout=dt.timedelta(seconds=2))
        with pytest.raises(HealthCheckFailed, match="404") as failed:
            failing.execute(CONTEXT)
        back = _deploy_op(app_container, rollback=True)
        outputs.append(back.execute(CONTEXT))
        deploy = _deploy_op(app_container, image=app_images.v2)
        outputs.append(deploy.execute(CONTEXT))

        watch = DeployWatchSensor(
            task_id="watch",
            migration_id="m1",
            postgres_conn_id="app_db",
            container=app_container.name,
            health_url=_health(app_container),
            metrics_url=auth_server.url("/metrics"),
            max_5xx_rate=0.5,
            watch=dt.timedelta(seconds=1),
            docker_url=DOCKER_URL,
        )
        for _ in range(20):
            if watch.poke(CONTEXT):
                break
            time.sleep(0.5)
        else:
            raise AssertionError("the watch did not finish")

        auth_server.status["/metrics"] = 500  # now the scrape fails and the URL lands in the problem text
        broken = DeployWatchSensor(
            task_id="watch",
            migration_id="m1",
            postgres_conn_id="app_db",
            container=app_container.name,
            health_url=_health(app_container),
            metrics_url=auth_server.url("/metrics"),
            max_5xx_rate=0.5,
            watch=dt.timedelta(seconds=30),
            escalate_after=dt.timedelta(seconds=1),
            docker_url=DOCKER_URL,
        )
        with pytest.raises(AirflowFailException, match="unreadable") as escalated:
            for _ in range(20):
                broken.poke(CONTEXT)
                time.sleep(0.3)

    assert docker_api.inspect_container(app_container.name)["Config"]["Image"] == app_images.v2
    assert ("GET", "/metrics", True) in auth_server.requests  # the credentials were sent, as Basic auth
    assert "metrics http://***@127.0.0.1" in str(escalated.value)
    steps = {s.step: s for s in ledger.steps(pg_conn, "m1")}
    assert steps["watch"].status == "failed" and "***@127.0.0.1" in (steps["watch"].error or "")
    rendered = "".join(str(_serialize_rendered_fields(op)) for op in (failing, back, deploy, watch))
    out, err = capfd.readouterr()
    for where, text in {
        "health failure": str(failed.value),
        "escalation": str(escalated.value),
        "log": caplog.text,
        "task output": out + err,
        "rendered fields": rendered,
        "xcom": repr(outputs),
        "ledger": ledger_text(pg_conn),
    }.items():
        assert PASSWORD not in text, where
    assert "GET http://***@127.0.0.1" in out + caplog.text
