"""DeployWatchSensor over a real container and ledger: a quiet watch succeeds, a container that dies and
stays dead fails the task (no retry), which is what rolls the migration back."""

from __future__ import annotations

import datetime as dt
import time

import psycopg
import pytest
from airflow.sdk.exceptions import AirflowFailException
from docker import APIClient

from airflow_provider_expand.engine.ledger.store import Ledger
from airflow_provider_expand.engine.lifecycle import Event, Lifecycle
from airflow_provider_expand.sensors.deploy_watch import WATCH_STEP, DeployWatchSensor
from tests.deploy.images import DOCKER_URL, AppContainer


def _sensor(app: AppContainer, conn_id: str, **kwargs: object) -> DeployWatchSensor:
    return DeployWatchSensor(
        task_id="watch",
        migration_id="m1",
        postgres_conn_id=conn_id,
        container=app.name,
        health_url=f"{app.url}/health/ready",
        docker_url=DOCKER_URL,
        **kwargs,  # type: ignore[arg-type]
    )


def _poke_until_done(sensor: DeployWatchSensor, limit: float) -> float:
    start = time.monotonic()
    while not sensor.poke({}):  # type: ignore[arg-type]
        assert time.monotonic() - start < limit, "the watch did not end"
        time.sleep(0.3)
    return time.monotonic() - start


@pytest.fixture
def deployed(pg_conn: psycopg.Connection) -> Ledger:
    ledger = Ledger()
    ledger.ensure(pg_conn)
    Lifecycle(ledger).move(pg_conn, "m1", Event.EXPAND_STARTED)
    Lifecycle(ledger).move(pg_conn, "m1", Event.EXPANDED)
    Lifecycle(ledger).move(pg_conn, "m1", Event.DEPLOYED)
    return ledger


def test_a_quiet_watch_succeeds_after_its_duration(
    app_container: AppContainer, airflow_conn: dict[str, str], pg_conn: psycopg.Connection, deployed: Ledger
) -> None:
    sensor = _sensor(app_container, airflow_conn["postgres"], watch=dt.timedelta(seconds=2))
    took = _poke_until_done(sensor, limit=20)
    assert took >= 0.5  # counted from deployed_at, a moment ago
    step = deployed.step(pg_conn, "m1", WATCH_STEP)
    assert step is not None and step.status == "success"


def test_a_container_that_stays_down_escalates(
    docker_api: APIClient,
    app_container: AppContainer,
    airflow_conn: dict[str, str],
    pg_conn: psycopg.Connection,
    deployed: Ledger,
) -> None:
    sensor = _sensor(
        app_container,
        airflow_conn["postgres"],
        watch=dt.timedelta(seconds=1),
        escalate_after=dt.timedelta(seconds=2),
    )
    docker_api.stop(app_container.name, timeout=5)
    with pytest.raises(AirflowFailException, match=rf"escalating: container {app_container.name}"):
        _poke_until_done(sensor, limit=20)  # the watch's end does not close an open problem
    step = deployed.step(pg_conn, "m1", WATCH_STEP)
    assert step is not None and step.status == "failed" and "not running" in (step.error or "")
