"""The container swap after a worker died in the middle of it: each partial state is made by hand with the
Docker API (the swap's first steps, as a killed worker leaves them), then the deploy is retried or rolled
back through DockerDeployOperator and its ledger, and the end state is checked on the real engine."""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from docker import APIClient

from airflow_provider_expand.engine.deploy.container_swap import aside_name, create_config
from airflow_provider_expand.engine.deploy.docker_client import DockerRefused
from airflow_provider_expand.engine.deploy.release import DEPLOY_STEP, ROLLBACK_STEP
from airflow_provider_expand.engine.ledger.store import Ledger
from airflow_provider_expand.engine.lifecycle import Event, Lifecycle
from airflow_provider_expand.operators.deploy import DockerDeployOperator
from tests.deploy.images import DOCKER_URL, AppImages, free_port


@dataclass
class App:
    name: str
    port: int
    data: Path
    original_id: str

    @property
    def health(self) -> str:
        return f"http://127.0.0.1:{self.port}/health/ready"


@pytest.fixture
def app(docker_api: APIClient, app_images: AppImages, tmp_path: Path) -> Iterator[App]:
    """A running v1 container with env, labels, a published port, a bind mount and a restart policy."""
    name, port = f"expandtest-swap-{uuid.uuid4().hex[:8]}", free_port()
    data = tmp_path / "data"
    data.mkdir()
    (data / "kept.txt").write_text("mounted\n")
    created = docker_api.create_container(
        app_images.v1,
        name=name,
        environment=["SHOP_MODE=test", "FEATURE_X=1"],
        labels={"com.docker.compose.service": "backend-worker", "owner": "expand-tests"},
        ports=[8080],
        volumes=["/data"],
        host_config=docker_api.create_host_config(
            port_bindings={8080: ("127.0.0.1", port)},
            binds={str(data): {"bind": "/data", "mode": "ro"}},
            restart_policy={"Name": "on-failure", "MaximumRetryCount": 2},
        ),
    )
    docker_api.start(created["Id"])
    yield App(name, port, data, str(created["Id"]))
    for leftover in (name, aside_name(name)):
        with contextlib.suppress(Exception):
            docker_api.remove_container(leftover, force=True)


def _operator(app: App, conn_id: str, **kwargs: Any) -> DockerDeployOperator:
    return DockerDeployOperator(
        task_id="deploy",
        migration_id="m1",
        postgres_conn_id=conn_id,
        container=app.name,
        health_url=app.health,
        docker_url=DOCKER_URL,
        health_timeout=dt.timedelta(seconds=20),
        **kwargs,
    )


def _expanded(pg_conn: psycopg.Connection) -> Ledger:
    ledger = Ledger()
    ledger.ensure(pg_conn)
    Lifecycle(ledger).move(pg_conn, "m1", Event.EXPAND_STARTED)
    Lifecycle(ledger).move(pg_conn, "m1", Event.EXPANDED)
    return ledger


def _deploy_began(pg_conn: psycopg.Connection, previous: str) -> None:
    """What release() records before it touches the container: the deploy step and the image to go back to."""
    ledger = _expanded(pg_conn)
    ledger.start_step(pg_conn, "m1", DEPLOY_STEP)
    with pg_conn.transaction(), pg_conn.cursor() as cur:
        ledger.checkpoint(cur, "m1", DEPLOY_STEP, 0, last_key=previous, rows_added=0)


def _set_aside(client: APIClient, app: App, *, stop: bool = True) -> None:
    if stop:
        client.stop(app.name, timeout=10)
    client.rename(app.name, aside_name(app.name))


def _create_new(client: APIClient, app: App, image: str) -> str:
    """The swap's create step by hand: the new container from the one set aside, not started."""
    previous = client.inspect_container(aside_name(app.name))
    kwargs = create_config(previous, client.inspect_image(previous["Image"]))
    return str(client.create_container(image, name=app.name, **kwargs)["Id"])


def only_previous(client: APIClient, app: App, image: str) -> str | None:
    _set_aside(client, app)
    return None


def previous_running_aside(client: APIClient, app: App, image: str) -> str | None:
    _set_aside(client, app, stop=False)
    return None


def new_created_not_started(client: APIClient, app: App, image: str) -> str | None:
    _set_aside(client, app)
    return _create_new(client, app, image)


def both_running(client: APIClient, app: App, image: str) -> str | None:
    _set_aside(client, app)
    new_id = _create_new(client, app, image)
    client.start(new_id)
    return new_id


CRASHES: dict[str, Callable[[APIClient, App, str], str | None]] = {
    "only_previous": only_previous,
    "previous_running_aside": previous_running_aside,
    "new_created_not_started": new_created_not_started,
    "new_running_previous_kept": both_running,
}


def _names(client: APIClient, app: App) -> list[str]:
    return sorted(
        n.lstrip("/")
        for c in client.containers(all=True, filters={"name": app.name})
        for n in c["Names"]
        if n.lstrip("/") in (app.name, aside_name(app.name))
    )


def assert_swapped(client: APIClient, app: App, image: str) -> dict[str, Any]:
    """Exactly one container named ``app.name``, running ``image``, healthy, its configuration kept."""
    assert _names(client, app) == [app.name]
    info = client.inspect_container(app.name)
    assert info["State"]["Running"], info["State"]
    assert info["Image"] == client.inspect_image(image)["Id"]
    with urllib.request.urlopen(app.health, timeout=5) as response:
        assert response.status == 200
    env = dict(e.split("=", 1) for e in info["Config"]["Env"])
    assert env["SHOP_MODE"] == "test" and env["FEATURE_X"] == "1"
    assert env["APP_VERSION"] == image.rsplit(":", 1)[1]
    assert info["Config"]["Labels"]["com.docker.compose.service"] == "backend-worker"
    assert info["Config"]["Labels"]["owner"] == "expand-tests"
    assert info["HostConfig"]["PortBindings"] == {
        "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(app.port)}]
    }
    assert info["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    assert [(m["Source"], m["Destination"], m["RW"]) for m in info["Mounts"]] == [
        (str(app.data), "/data", False)
    ]
    return info


@pytest.mark.parametrize("crash", list(CRASHES))
def test_a_retried_deploy_goes_on_from_where_the_worker_died(
    crash: str,
    docker_api: APIClient,
    app_images: AppImages,
    app: App,
    airflow_conn: dict[str, str],
    pg_conn: psycopg.Connection,
) -> None:
    _deploy_began(pg_conn, app_images.v1)
    new_id = CRASHES[crash](docker_api, app, app_images.v2)

    done = _operator(app, airflow_conn["postgres"], image=app_images.v2).execute({})  # type: ignore[arg-type]

    info = assert_swapped(docker_api, app, app_images.v2)
    assert done is not None and done["previous_image"] == app_images.v1
    if new_id is not None:  # the new container existed: started, not recreated
        assert info["Id"] == new_id and done["container_id"] == new_id
    assert info["Id"] != app.original_id
    ledger = Ledger()
    record, step = ledger.get(pg_conn, "m1"), ledger.step(pg_conn, "m1", DEPLOY_STEP)
    assert record is not None and record.phase == "deployed"
    assert step is not None and step.status == "success" and step.last_key == app_images.v1


@pytest.mark.parametrize("crash", list(CRASHES))
def test_the_rollback_puts_the_previous_container_back(
    crash: str,
    docker_api: APIClient,
    app_images: AppImages,
    app: App,
    airflow_conn: dict[str, str],
    pg_conn: psycopg.Connection,
) -> None:
    _deploy_began(pg_conn, app_images.v1)
    CRASHES[crash](docker_api, app, app_images.v2)

    back = _operator(app, airflow_conn["postgres"], rollback=True).execute({})  # type: ignore[arg-type]

    info = assert_swapped(docker_api, app, app_images.v1)
    assert info["Id"] == app.original_id  # the very container from before the deploy, renamed back
    assert back is not None and back["image"] == app_images.v1
    step = Ledger().step(pg_conn, "m1", ROLLBACK_STEP)
    assert step is not None and step.status == "success"


def test_a_refused_start_leaves_a_state_the_retry_continues_from(
    docker_api: APIClient,
    app_images: AppImages,
    app: App,
    airflow_conn: dict[str, str],
    pg_conn: psycopg.Connection,
) -> None:
    """The new container cannot bind its port (taken meanwhile): the old one cannot be started either, so
    the worker gives up mid-swap; once the port is free, the retry completes."""
    _expanded(pg_conn)  # no deploy recorded yet: the image to go back to is read from the one set aside
    _set_aside(docker_api, app)
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", app.port))
    squatter.listen()
    try:
        with pytest.raises(DockerRefused, match="could not be recreated"):
            _operator(app, airflow_conn["postgres"], image=app_images.v2).execute({})  # type: ignore[arg-type]
    finally:
        squatter.close()
    step = Ledger().step(pg_conn, "m1", DEPLOY_STEP)
    assert step is not None and step.status == "failed" and step.last_key == app_images.v1

    _operator(app, airflow_conn["postgres"], image=app_images.v2).execute({})  # type: ignore[arg-type]

    assert_swapped(docker_api, app, app_images.v2)
