"""docker-compose.yaml: Debian's ``docker-compose`` accepts it, and it has the services of Airflow's own 3.3
compose file plus the app's, every image pinned, the provider built from this repository."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
AIRFLOW = {
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
}
APP = {"app-postgres", "app-redis", "backend-worker"}


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """target -> source of a service's volumes (docker-compose 1.x prints ``src:dst[:mode]`` strings)."""
    mounts: dict[str, str] = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = str(volume.get("source", "")), str(volume["target"])
        mounts[target] = source
    return mounts


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose missing: apt-get install docker-compose (.ci/run does)")
    result = subprocess.run(
        [binary, "-f", str(REPO / "docker-compose.yaml"), "config"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = yaml.safe_load(result.stdout)
    return parsed


def test_services_are_airflows_celery_stack_plus_the_app(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert AIRFLOW | APP | {"postgres", "redis", "airflow-init"} <= set(services)
    for name in AIRFLOW:
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://"), name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql"), name
        assert "@app-postgres:" in env["AIRFLOW_CONN_APP_DB"], name
        assert env["AIRFLOW_CONN_APP_REDIS"].startswith("redis://app-redis:"), name
        assert services[name]["build"]["context"] == str(REPO), name  # the provider from this repository
        assert _mounts(services[name])["/opt/airflow/dags"] == str(REPO / "dags"), name
    assert services["airflow-worker"]["command"] in ("celery worker", ["celery", "worker"])


def test_every_image_is_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service.get("image")
        assert image, f"{name} has no image"
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
        assert re.search(r"\d+\.\d+", tag) and tag != "latest", f"{name}: image {image!r} is not pinned"
    base = re.search(r"^FROM (\S+)$", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert base is not None
    # the image's Airflow is the one the provider is tested with
    assert base.group(1).startswith(f"apache/airflow:{importlib.metadata.version('apache-airflow')}-"), base


def test_app_database_gets_the_demo_schema(compose: dict[str, Any]) -> None:
    mounts = _mounts(compose["services"]["app-postgres"])
    init = {t: s for t, s in mounts.items() if t.startswith("/docker-entrypoint-initdb.d/")}
    assert str(REPO / "tests" / "fixtures" / "demo_schema.sql") in init.values(), mounts
    assert all(Path(source).is_file() for source in init.values()), init
    # the entrypoint runs them in name order: the schema first, then the seed
    assert init[min(init)].endswith("demo_schema.sql"), init
