"""A real Docker engine and tiny app images for the deploy tests, built locally (no registry is reachable).

Each image is ``docker import`` of a root filesystem holding Debian's static busybox: ``httpd`` serves
``/health/ready`` (v1, v2) or nothing there (v3, whose health check fails), and ``/cgi-bin/fail`` writes an
error line to the container's log and answers 500. Built once per session.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.ports import free_port

DOCKER_URL = os.environ.get("EXPAND_TEST_DOCKER_URL", "unix:///var/run/docker.sock")
REPOSITORY = "expandtest/app"

_START = """#!/bin/sh
echo "app $APP_VERSION starting on port ${PORT:-8080}"
# pid 1 ignores SIGTERM without a handler: trap it, or every stop waits out docker's 10 s
trap 'kill "$pid"; exit 0' TERM INT
httpd -f -v -p "${PORT:-8080}" -h /www &
pid=$!
wait "$pid"
"""
_FAIL_CGI = """#!/bin/sh
echo "ERROR request failed: boom" >&2
printf 'Status: 500 Internal Server Error\\r\\nContent-Type: text/plain\\r\\n\\r\\nboom\\n'
"""


def _rootfs(healthy: bool) -> bytes:
    busybox = shutil.which("busybox") or "/bin/busybox"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def add(name: str, data: bytes | None = None, mode: int = 0o755, link: str | None = None) -> None:
            info = tarfile.TarInfo(name)
            info.mode = mode
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            elif data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

        for d in ("bin", "tmp", "www", "www/cgi-bin", "www/health"):
            add(d)
        add("bin/busybox", Path(busybox).read_bytes())
        for applet in ("sh", "httpd", "echo", "printf", "cat", "sleep", "wget", "env"):
            add(f"bin/{applet}", link="busybox")
        add("bin/start", _START.encode())
        add("www/cgi-bin/fail", _FAIL_CGI.encode())
        if healthy:
            add("www/health/ready", b"ok\n", mode=0o644)
    return buf.getvalue()


@dataclass(frozen=True)
class AppImages:
    v1: str
    v2: str
    v3: str  # its /health/ready answers 404


@pytest.fixture(scope="session")
def docker_api() -> Iterator[object]:
    """A low-level client of the machine's Docker engine; skips (saying why) where none answers."""
    import docker

    try:
        client = docker.APIClient(base_url=DOCKER_URL, version="auto", timeout=60)
        client.ping()
    except Exception as exc:
        pytest.skip(f"no Docker engine at {DOCKER_URL} ({exc}); .ci/run starts one")
    yield client
    client.close()


@pytest.fixture(scope="session")
def app_images(docker_api: object) -> AppImages:
    """v1 and v2 healthy, v3 failing its health endpoint; tagged under ``expandtest/app``."""
    from docker import APIClient

    assert isinstance(docker_api, APIClient)
    if shutil.which("busybox") is None and not Path("/bin/busybox").exists():
        pytest.skip("busybox-static is not installed (.ci/run installs it): no rootfs for the test images")
    tags = {}
    for tag, healthy in (("v1", True), ("v2", True), ("v3", False)):
        docker_api.import_image_from_data(
            _rootfs(healthy),
            repository=REPOSITORY,
            tag=tag,
            changes=[
                'CMD ["/bin/start"]',
                f"ENV APP_VERSION={tag}",
                "EXPOSE 8080",
            ],
        )
        tags[tag] = f"{REPOSITORY}:{tag}"
    return AppImages(**tags)


@dataclass
class AppContainer:
    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def app_container(docker_api: object, app_images: AppImages) -> Iterator[AppContainer]:
    """A running v1 container of this test's own, published on a free loopback port, removed afterwards."""
    from docker import APIClient

    assert isinstance(docker_api, APIClient)
    name = f"expandtest-{uuid.uuid4().hex[:10]}"
    port = free_port()
    created = docker_api.create_container(
        app_images.v1,
        name=name,
        environment=["SHOP_MODE=test", "FEATURE_X=1"],
        labels={"com.docker.compose.service": "backend-worker", "owner": "expand-tests"},
        ports=[8080],
        host_config=docker_api.create_host_config(
            port_bindings={8080: ("127.0.0.1", port)},
            restart_policy={"Name": "on-failure", "MaximumRetryCount": 2},
        ),
    )
    docker_api.start(created["Id"])
    yield AppContainer(name, port)
    for leftover in (name, f"{name}_expand_previous"):
        with contextlib.suppress(Exception):
            docker_api.remove_container(leftover, force=True)
