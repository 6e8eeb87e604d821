"""Deploy a container onto a new image ('Pasul 4: Deploy New Code') and back ('Rollback Rapid').

Like ``docker compose up -d --no-deps <service>``: the container is recreated on the new image with the
configuration it has (env, ports, mounts, networks, labels, restart policy), so a compose service stays one.
Everything that can be refused (engine, container, image) is checked before the running container is touched.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
from docker import APIClient

LOG_TAIL = 30


class DeployError(RuntimeError):
    """A deploy or a rollback of a container failed; the message names the container and image."""


class EngineUnreachable(DeployError):
    pass


class ContainerNotFound(DeployError):
    pass


class ImageNotFound(DeployError):
    pass


class HealthCheckFailed(DeployError):
    pass


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


def docker_client(base_url: str, *, timeout: int = 60) -> APIClient:
    """A low-level client for ``base_url``, pinged first so an unreachable engine fails here, clearly."""
    try:
        client = APIClient(base_url=base_url, version="auto", timeout=timeout)
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:
        raise EngineUnreachable(f"docker engine at {base_url} is unreachable: {exc}") from exc
    return client


def inspect_container(client: APIClient, container: str) -> dict[str, Any]:
    try:
        return dict(client.inspect_container(container))
    except docker.errors.NotFound as exc:
        raise ContainerNotFound(f"container {container!r} not found on the docker engine") from exc


def running_image(client: APIClient, container: str) -> str:
    """The image ``container`` runs, by the name it was created from while that name still points at it,
    else by id (a tag moved since would send a rollback to the wrong code)."""
    info = inspect_container(client, container)
    name, image_id = str(info["Config"]["Image"]), str(info["Image"])
    try:
        if client.inspect_image(name)["Id"] == image_id:
            return name
    except docker.errors.NotFound:
        pass
    return image_id


def ensure_image(client: APIClient, image: str, log: logging.Logger) -> dict[str, Any]:
    """A local image is used as it is; otherwise it is pulled from its registry."""
    try:
        return dict(client.inspect_image(image))
    except docker.errors.NotFound:
        pass
    log.info("image %s is not local: pulling it", image)
    try:
        client.pull(image)
        return dict(client.inspect_image(image))
    except docker.errors.DockerException as exc:
        raise ImageNotFound(
            f"image {image!r} exists neither locally nor in a reachable registry: {exc}"
        ) from exc


def _differs(values: list[str] | None, defaults: list[str] | None) -> list[str]:
    defaults_set = set(defaults or [])
    return [v for v in values or [] if v not in defaults_set]


def create_config(info: dict[str, Any], old_image: dict[str, Any]) -> dict[str, Any]:
    """``create_container`` arguments that reproduce ``info`` on another image.

    What the container inherited from its old image (env defaults, labels, command) is left out so the new
    image's own defaults apply; what was set on the container itself is kept.
    """
    config, image_config = info["Config"], old_image.get("Config") or {}
    kwargs: dict[str, Any] = {
        "environment": _differs(config.get("Env"), image_config.get("Env")),
        "labels": {
            k: v
            for k, v in (config.get("Labels") or {}).items()
            if (image_config.get("Labels") or {}).get(k) != v
        },
        "host_config": info["HostConfig"],
        "tty": bool(config.get("Tty")),
        "stdin_open": bool(config.get("OpenStdin")),
    }
    for key, arg in (
        ("Cmd", "command"),
        ("Entrypoint", "entrypoint"),
        ("WorkingDir", "working_dir"),
        ("User", "user"),
        ("Healthcheck", "healthcheck"),
        ("StopSignal", "stop_signal"),
    ):
        if config.get(key) and config.get(key) != image_config.get(key):
            kwargs[arg] = config[key]
    exposed = set(config.get("ExposedPorts") or {}) - set(image_config.get("ExposedPorts") or {})
    if exposed:
        kwargs["ports"] = [tuple(p.split("/", 1)) for p in sorted(exposed)]
    if config.get("Hostname") and not info["Id"].startswith(config["Hostname"]):
        kwargs["hostname"] = config["Hostname"]
    return kwargs


def _networks(info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """User-defined networks and their aliases (minus the old container's id, which docker adds itself)."""
    short_id = info["Id"][:12]
    networks: dict[str, dict[str, Any]] = {}
    for name, endpoint in (info["NetworkSettings"].get("Networks") or {}).items():
        if name in ("bridge", "host", "none"):
            continue
        aliases = [a for a in endpoint.get("Aliases") or [] if a != short_id]
        networks[name] = {"aliases": aliases or None}
    return networks


def recreate(
    client: APIClient, container: str, image: str, log: logging.Logger, *, stop_timeout: int = 10
) -> str:
    """Stop ``container``, recreate it on ``image`` with the same configuration, start it; its new id.

    The old container is renamed aside until the new one has started, and put back if that fails.
    """
    info = inspect_container(client, container)
    ensure_image(client, image, log)
    try:
        old_image = dict(client.inspect_image(info["Image"]))
    except docker.errors.NotFound:
        old_image = {}
    kwargs = create_config(info, old_image)
    networks = _networks(info)
    network_mode = str(info["HostConfig"].get("NetworkMode") or "")
    primary = network_mode if network_mode in networks else None
    if primary:
        kwargs["networking_config"] = client.create_networking_config(
            {primary: client.create_endpoint_config(aliases=networks[primary]["aliases"])}
        )
    name = info["Name"].lstrip("/")
    aside = f"{name}_expand_previous"
    was_running = bool(info["State"].get("Running"))
    log.info("stopping %s (%s) to recreate it on %s", name, info["Config"]["Image"], image)
    client.stop(info["Id"], timeout=stop_timeout)
    client.rename(info["Id"], aside)
    try:
        new = client.create_container(image, name=name, **kwargs)
        for net, endpoint in networks.items():
            if net != primary:
                client.connect_container_to_network(new["Id"], net, aliases=endpoint["aliases"])
        client.start(new["Id"])
    except docker.errors.DockerException as exc:
        log.error("could not start %s on %s: %s; putting the old container back", name, image, exc)
        with contextlib.suppress(docker.errors.NotFound):
            client.remove_container(name, force=True)
        client.rename(info["Id"], name)
        if was_running:
            client.start(info["Id"])
        raise DeployError(f"container {name!r} could not be recreated on image {image!r}: {exc}") from exc
    client.remove_container(info["Id"], v=False)
    log.info("%s recreated on %s (id %s)", name, image, new["Id"][:12])
    return str(new["Id"])


def http_status(url: str, *, timeout: float = 5.0) -> int | str:
    """The HTTP status of GET ``url``, or the connection error as text."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError) as exc:
        return f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"


def container_health(client: APIClient, container: str) -> tuple[bool, str]:
    """Whether the container runs and its own HEALTHCHECK (where it has one) does not say otherwise."""
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
        return [f"(logs unavailable: {exc})"]
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
                health_url,
            )
            return took
        now = f"{state}, GET {health_url} -> {status}"
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
    """Recreate ``container`` on ``image`` and wait for health.

    ``previous_image`` (from the ledger, on a retry) wins over what the container runs now, which may
    already be the new image.
    """
    previous = previous_image or running_image(client, container)
    ensure_image(client, image, log)
    container_id = recreate(client, container, image, log)
    took = wait_healthy(client, container, health_url, health_timeout, log)
    return DeployResult(container, container_id, previous, image, took)
