"""The deploy variant (where Docker runs): the example migration recreating a real container on the new
image, queues paused meanwhile. (a) the new image fails its health check: the container goes back to the
old image before rollback.sql, and the queues are not left paused; (b) the deploy task is SIGKILLed while
the old container is renamed aside: the retry finds it and completes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from docker import APIClient

from tests.deploy.images import DOCKER_URL, AppContainer, AppImages, app_container, app_images, docker_api
from tests.failures.executor import run_with_executor
from tests.failures.faults import Killer
from tests.failures.outcomes import assert_completes, assert_rolled_back
from tests.failures.scenario import Scenario

__all__ = ["app_container", "app_images", "docker_api"]


def _deploy(app: AppContainer, image: str, **extra: Any) -> dict[str, Any]:
    return {
        "container": app.name,
        "image": image,
        "health_url": f"{app.url}/health/ready",
        "health_timeout": "15s",
        "watch": "1s",
        "escalate_after": "30s",
        "docker_url": DOCKER_URL,
        **extra,
    }


def _image(api: APIClient, name: str) -> str:
    return str(api.inspect_container(name)["Config"]["Image"])


def test_deploy_health_fails(
    scenario: Callable[..., Scenario],
    docker_api: APIClient,
    app_images: AppImages,
    app_container: AppContainer,
) -> None:
    s = scenario(
        "deploy",
        "the new image fails its health check (3 s)",
        "container back on v1, rolled back (pre), queues resumed; re-run on a good image completes",
        "definitive",
        overrides={"deploy": _deploy(app_container, app_images.v3, health_timeout="3s")},
    )
    assert_rolled_back(s, "deploy")
    assert _image(docker_api, app_container.name) == app_images.v1
    s.edit_spec(lambda spec: spec["deploy"].__setitem__("image", app_images.v2))
    assert_completes(s, "re-run (v2)")
    assert _image(docker_api, app_container.name) == app_images.v2


@pytest.mark.usefixtures("executor_api")
def test_deploy_killed_mid_swap(
    scenario: Callable[..., Scenario],
    docker_api: APIClient,
    app_images: AppImages,
    app_container: AppContainer,
) -> None:
    s = scenario(
        "deploy",
        "SIGKILL while the old container is renamed `<name>_expand_previous`",
        "retried, the retry finds the old container and completes on v2; nothing left aside",
        "kill",
        overrides={"deploy": _deploy(app_container, app_images.v2)},
    )
    aside = f"{app_container.name}_expand_previous"

    def aside_exists() -> bool:
        return bool(docker_api.containers(all=True, filters={"name": f"^/{aside}$"}))

    def fault() -> Killer:
        return Killer(aside_exists, s.env.home / "airflow.db", s.migration_id, "deploy").start()

    record, verdict = s.run("run 1", fault=fault, expect_shape=["contract"], runner=run_with_executor)
    assert record.fault.startswith("SIGKILLed"), record.fault
    assert record.state == "success", record.states
    assert verdict.ok and verdict.phase == "completed", verdict.summary()
    assert _image(docker_api, app_container.name) == app_images.v2
    assert not aside_exists()
