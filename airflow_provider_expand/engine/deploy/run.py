"""Deploy a container onto a new image ('Pasul 4: Deploy New Code') and back ('Rollback Rapid').

The swap itself (:mod:`~airflow_provider_expand.engine.deploy.container_swap`) keeps the container's configuration
and survives a worker dying at any step; here it is health-gated: the old container, set aside, is removed
only once the new one is healthy, so a failed gate leaves the rollback its way back.
Everything that can be refused (engine, container, image) is checked before the running container is touched.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import docker.errors
from docker import APIClient

from airflow_provider_expand.engine.deploy.container_swap import drop_previous, image_before, swap, swap_state
from airflow_provider_expand.engine.deploy.docker_client import (
    HealthCheckFailed,
    docker_errors,
    ensure_image,
    inspect_container,
)
from airflow_provider_expand.engine.redact import redact_url, split_credentials

LOG_TAIL = 30


@dataclass(frozen=True)
class DeployResult:
    """What a deploy did: the image the container ran before (for the rollback) and the one it runs now."""

    container: str
    container_id: str
    previous_image: str
    image: str
    healthy_after: dt.timedelta

    def summary(self) -> dict[str, object]:
        return {
            "container": self.container,
            "container_id": self.container_id,
            "previous_image": self.previous_image,
            "image": self.image,
            "healthy_after_s": round(self.healthy_after.total_seconds(), 3),
        }


def http_get(url: str) -> urllib.request.Request:
    """A GET of ``url`` with its user info sent as Basic auth (urllib cannot read it from the URL)."""
    bare, headers = split_credentials(url)
    return urllib.request.Request(bare, headers={"User-Agent": "airflow-provider-expand", **headers})


def http_status(url: str, *, timeout: float = 5.0) -> int | str:
    """The HTTP status of GET ``url``, or the connection error as text (URL user info redacted)."""
    try:
        with urllib.request.urlopen(http_get(url), timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return redact_url(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}")


def container_health(client: APIClient, container: str) -> tuple[bool, str]:
    """Whether the container runs and its own HEALTHCHECK (where it has one) does not say otherwise."""
    with docker_errors(f"inspecting container {container!r}"):
        state = inspect_container(client, container)["State"]
    if not state.get("Running"):
        return False, f"not running ({state.get('Status')}, exit code {state.get('ExitCode')})"
    health = (state.get("Health") or {}).get("Status")
    if health is None:
        return True, "running"
    return health == "healthy", f"HEALTHCHECK {health}"


def last_lines(client: APIClient, container: str, tail: int = LOG_TAIL) -> list[str]:
    try:
        raw = client.logs(container, stdout=True, stderr=True, tail=tail, timestamps=False)
    except docker.errors.DockerException as exc:
        return [f"(logs unavailable: {redact_url(str(exc))})"]
    return bytes(raw).decode("utf-8", "replace").splitlines()


def wait_healthy(
    client: APIClient,
    container: str,
    health_url: str,
    timeout: dt.timedelta,
    log: logging.Logger,
    *,
    interval: float = 1.0,
) -> dt.timedelta:
    """Poll until ``health_url`` answers 200 and the container is healthy; raise with its last log lines."""
    shown = redact_url(health_url)
    start = time.monotonic()
    deadline = start + timeout.total_seconds()
    last = ""
    while True:
        ok, state = container_health(client, container)
        status: int | str = http_status(health_url) if ok or "HEALTHCHECK" in state else "not tried"
        if ok and status == 200:
            took = dt.timedelta(seconds=time.monotonic() - start)
            log.info(
                "%s healthy after %.1fs (%s, GET %s -> 200)",
                container,
                took.total_seconds(),
                state,
                shown,
            )
            return took
        now = f"{state}, GET {shown} -> {status}"
        if now != last:
            log.info("%s not healthy yet: %s", container, now)
            last = now
        exited = state.startswith("not running")
        if exited or time.monotonic() >= deadline:
            lines = last_lines(client, container)
            log.error("last %d lines of %s:\n%s", len(lines), container, "\n".join(lines))
            why = "exited" if exited else f"not healthy within {timeout}"
            raise HealthCheckFailed(f"container {container!r} {why}: {now}")
        time.sleep(interval)


def deploy(
    client: APIClient,
    container: str,
    image: str,
    *,
    health_url: str,
    health_timeout: dt.timedelta,
    log: logging.Logger,
    previous_image: str | None = None,
) -> DeployResult:
    """Bring ``container`` onto ``image`` and wait for health; from whatever state an earlier try left.

    ``previous_image`` (from the ledger, on a retry) wins over what the container ran before this call,
    which may already be the new image.
    """
    image_id = str(ensure_image(client, image, log)["Id"])
    state = swap_state(client, container)
    previous = previous_image or image_before(client, state, image_id)
    container_id = swap(client, state, image, image_id, log)
    took = wait_healthy(client, state.name, health_url, health_timeout, log)
    drop_previous(client, state.name, log)
    return DeployResult(state.name, container_id, previous, image, took)
