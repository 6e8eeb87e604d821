"""engine.deploy.run against a real Docker engine: recreate on a new image keeping the configuration, the
health gate, and bad input refused before the running container is touched."""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
import urllib.request

import pytest
from docker import APIClient

from airflow_provider_expand.engine.deploy.docker_client import (
    ContainerNotFound,
    EngineUnreachable,
    HealthCheckFailed,
    ImageNotFound,
    docker_client,
    running_image,
)
from airflow_provider_expand.engine.deploy.run import deploy, wait_healthy
from tests.deploy.images import DOCKER_URL, AppContainer, AppImages

log = logging.getLogger("test.deploy")


def _env(client: APIClient, name: str) -> dict[str, str]:
    env = client.inspect_container(name)["Config"]["Env"]
    return dict(e.split("=", 1) for e in env)


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(response.status)


def test_v1_to_v2_keeps_ports_env_labels_restart_policy(
    docker_api: APIClient, app_images: AppImages, app_container: AppContainer
) -> None:
    before = docker_api.inspect_container(app_container.name)
    wait_healthy(
        docker_api, app_container.name, f"{app_container.url}/health/ready", dt.timedelta(seconds=20), log
    )

    result = deploy(
        docker_api,
        app_container.name,
        app_images.v2,
        health_url=f"{app_container.url}/health/ready",
        health_timeout=dt.timedelta(seconds=20),
        log=log,
    )

    after = docker_api.inspect_container(app_container.name)
    assert result.previous_image == app_images.v1
    assert after["Config"]["Image"] == app_images.v2 and after["Id"] != before["Id"]
    env = _env(docker_api, app_container.name)
    assert env["APP_VERSION"] == "v2"  # the new image's own default, not the old one's
    assert env["SHOP_MODE"] == "test" and env["FEATURE_X"] == "1"
    assert after["HostConfig"]["PortBindings"] == before["HostConfig"]["PortBindings"]
    assert after["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    assert after["Config"]["Labels"]["com.docker.compose.service"] == "backend-worker"
    assert _get(f"{app_container.url}/health/ready") == 200
    assert b"app v2 starting" in docker_api.logs(app_container.name)
    assert running_image(docker_api, app_container.name) == app_images.v2
    names = {c["Names"][0] for c in docker_api.containers(all=True)}
    assert f"/{app_container.name}_expand_previous" not in names


def test_v1_to_v3_fails_health_and_rollback_restores_v1(
    docker_api: APIClient,
    app_images: AppImages,
    app_container: AppContainer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    health = f"{app_container.url}/health/ready"
    wait_healthy(docker_api, app_container.name, health, dt.timedelta(seconds=20), log)
    previous = running_image(docker_api, app_container.name)

    with caplog.at_level(logging.INFO), pytest.raises(HealthCheckFailed, match=app_container.name) as failed:
        deploy(
            docker_api,
            app_container.name,
            app_images.v3,
            health_url=health,
            health_timeout=dt.timedelta(seconds=3),
            log=log,
        )
    assert "404" in str(failed.value)
    assert "app v3 starting" in caplog.text  # the container's last lines are in the log

    back = deploy(
        docker_api,
        app_container.name,
        previous,
        health_url=health,
        health_timeout=dt.timedelta(seconds=20),
        log=log,
    )
    assert back.image == app_images.v1 and back.previous_image == app_images.v3
    assert docker_api.inspect_container(app_container.name)["State"]["Running"]
    assert _env(docker_api, app_container.name)["APP_VERSION"] == "v1"
    assert _get(health) == 200


def test_bad_input_leaves_the_running_container_untouched(
    docker_api: APIClient, app_images: AppImages, app_container: AppContainer
) -> None:
    before = docker_api.inspect_container(app_container.name)
    health = f"{app_container.url}/health/ready"
    args = {"health_url": health, "health_timeout": dt.timedelta(seconds=5), "log": log}

    with pytest.raises(ContainerNotFound, match="no-such-container-xyz"):
        deploy(docker_api, "no-such-container-xyz", app_images.v2, **args)  # type: ignore[arg-type]
    with pytest.raises(ImageNotFound, match="expandtest/app:does-not-exist"):
        deploy(docker_api, app_container.name, "expandtest/app:does-not-exist", **args)  # type: ignore[arg-type]
    with pytest.raises(EngineUnreachable, match=re.escape("unix:///tmp/no-docker-here.sock")):
        docker_client("unix:///tmp/no-docker-here.sock", timeout=3)

    after = docker_api.inspect_container(app_container.name)
    assert after["Id"] == before["Id"] and after["State"]["Running"]
    assert after["State"]["StartedAt"] == before["State"]["StartedAt"]
    assert _get(health) == 200
    assert docker_client(DOCKER_URL).ping()


def test_the_container_healthcheck_is_kept_and_waited_for(
    docker_api: APIClient, app_images: AppImages
) -> None:
    from tests.deploy.images import free_port

    name, port = f"expandtest-hc-{time.monotonic_ns() % 10**8}", free_port()
    check = {
        "Test": ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/health/ready"],
        "Interval": 300_000_000,
        "Timeout": 2_000_000_000,
        "Retries": 2,
    }
    created = docker_api.create_container(
        app_images.v1,
        name=name,
        ports=[8080],
        healthcheck=check,
        host_config=docker_api.create_host_config(port_bindings={8080: ("127.0.0.1", port)}),
    )
    docker_api.start(created["Id"])
    try:
        deploy(
            docker_api,
            name,
            app_images.v2,
            health_url=f"http://127.0.0.1:{port}/health/ready",
            health_timeout=dt.timedelta(seconds=20),
            log=log,
        )
        after = docker_api.inspect_container(name)
        assert after["Config"]["Healthcheck"]["Test"] == check["Test"]
        assert after["State"]["Health"]["Status"] == "healthy"  # waited for, not only the HTTP 200
    finally:
        docker_api.remove_container(name, force=True)
