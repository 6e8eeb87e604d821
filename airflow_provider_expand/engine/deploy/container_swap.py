"""The container swap, crash-safe: every state a dead worker can leave is one the next try continues from.

Like ``docker compose up -d --no-deps <service>``, the container is recreated on the new image with the
configuration it has (env, ports, mounts, networks, labels, restart policy). The old one is stopped and
renamed ``<name>_expand_previous`` first, and kept (stopped) until the new one has passed its health gate:
a retry finds it and creates the new container from it, a rollback renames it back. The states between
two steps, and what :func:`swap` does from each:

==============================  =====================================================================
``<name>`` / ``_expand_previous``  what happens
==============================  =====================================================================
on the target image / any       kept (started if it is not); nothing is recreated
other image / target image      a way back: ``<name>`` removed, the previous renamed back and started
other image / none              set aside (stopped, renamed), then recreated from it
none / any                      recreated from the previous (stopped first if it runs)
other image / other image       ``<name>`` (a failed try's) removed, recreated from the previous
==============================  =====================================================================
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass
from typing import Any

import docker.errors
from docker import APIClient

from airflow_provider_expand.engine.deploy.docker_client import (
    ContainerNotFound,
    DockerRefused,
    docker_errors,
    find_container,
    image_of,
)

ASIDE_SUFFIX = "_expand_previous"


def aside_name(name: str) -> str:
    """Where the old container waits while its successor starts."""
    return f"{name}{ASIDE_SUFFIX}"


@dataclass(frozen=True)
class SwapState:
    """What the engine holds under ``<name>`` and ``<name>_expand_previous`` (either may be missing)."""

    name: str
    current: dict[str, Any] | None
    previous: dict[str, Any] | None

    @property
    def source(self) -> dict[str, Any]:
        """The container whose configuration the new one copies: the one set aside if there is one."""
        info = self.previous or self.current
        assert info is not None
        return info


def swap_state(client: APIClient, container: str) -> SwapState:
    """Both containers of a swap, as they are now; :class:`ContainerNotFound` when neither exists."""
    with docker_errors(f"inspecting container {container!r}"):
        current = _named(client, container)
        if current is None:  # an id rather than a name, unless it is the id of one set aside
            found = find_container(client, container)
            if found is not None and not str(found["Name"]).endswith(ASIDE_SUFFIX):
                current = found
        name = str(current["Name"]).lstrip("/") if current else container
        previous = _named(client, aside_name(name))
    if current is None and previous is None:
        raise ContainerNotFound(
            f"container {container!r} not found on the docker engine (nor {aside_name(container)!r})"
        )
    return SwapState(name, current, previous)


def _named(client: APIClient, name: str) -> dict[str, Any] | None:
    """The container of exactly that name (``inspect`` alone would also take an id prefix)."""
    for summary in client.containers(all=True, filters={"name": f"^/{re.escape(name)}$"}):
        return find_container(client, str(summary["Id"]))
    return None


def image_before(client: APIClient, state: SwapState, image_id: str) -> str:
    """The image this swap moves away from: ``<name>``'s unless that already is the target."""
    with docker_errors(f"inspecting the images of {state.name!r}"):
        if state.current is not None and (state.current["Image"] != image_id or state.previous is None):
            return image_of(client, state.current)
        return image_of(client, state.source)


def _running(info: dict[str, Any]) -> bool:
    return bool(info["State"].get("Running"))


def swap(
    client: APIClient,
    state: SwapState,
    image: str,
    image_id: str,
    log: logging.Logger,
    *,
    stop_timeout: int = 10,
) -> str:
    """Bring ``<name>`` onto ``image`` (whose id is ``image_id``) from ``state``; the id of ``<name>`` after.

    ``<name>_expand_previous`` may be left behind, stopped: :func:`drop_previous` removes it once the new
    container is healthy, a rollback puts it back.
    """
    name, current, previous = state.name, state.current, state.previous
    with docker_errors(f"swapping container {name!r} onto {image!r}"):
        if current is not None and current["Image"] == image_id:
            if previous is not None and _running(previous):
                client.stop(previous["Id"], timeout=stop_timeout)
            if not _running(current):
                log.info("%s exists on %s but is not running (an interrupted try): starting it", name, image)
                client.start(current["Id"])
            else:
                log.info("%s already runs %s: not recreated", name, image)
            return str(current["Id"])
        if previous is not None and previous["Image"] == image_id:
            log.warning("%s: putting back %s (%s)", name, aside_name(name), image)
            if current is not None:
                client.remove_container(current["Id"], force=True)
            client.rename(previous["Id"], name)
            if not _running(previous):
                client.start(previous["Id"])
            return str(previous["Id"])
        if current is not None and previous is not None:
            log.warning(
                "%s is on %s from an earlier try; recreating it from %s",
                name,
                current["Config"]["Image"],
                aside_name(name),
            )
            client.remove_container(current["Id"], force=True)
        elif current is not None:
            log.info("stopping %s (%s) to recreate it on %s", name, current["Config"]["Image"], image)
            client.stop(current["Id"], timeout=stop_timeout)
            client.rename(current["Id"], aside_name(name))
            previous = dict(client.inspect_container(current["Id"]))
        else:
            log.warning(
                "%s is missing but %s exists (an interrupted try): going on from it", name, aside_name(name)
            )
        assert previous is not None
        if _running(previous):
            client.stop(previous["Id"], timeout=stop_timeout)
        return _create_from(client, previous, name, image, log)


def _create_from(
    client: APIClient, previous: dict[str, Any], name: str, image: str, log: logging.Logger
) -> str:
    """Create and start ``name`` on ``image`` with ``previous``'s configuration; on a refusal, put it back."""
    try:
        old_image = dict(client.inspect_image(previous["Image"]))
    except docker.errors.NotFound:
        old_image = {}
    kwargs = create_config(previous, old_image)
    networks = _networks(previous)
    network_mode = str(previous["HostConfig"].get("NetworkMode") or "")
    primary = network_mode if network_mode in networks else None
    if primary:
        kwargs["networking_config"] = client.create_networking_config(
            {primary: client.create_endpoint_config(aliases=networks[primary]["aliases"])}
        )
    try:
        new = client.create_container(image, name=name, **kwargs)
        for net, endpoint in networks.items():
            if net != primary:
                client.connect_container_to_network(new["Id"], net, aliases=endpoint["aliases"])
        client.start(new["Id"])
    except docker.errors.APIError as exc:
        log.error("could not start %s on %s: %s; putting the old container back", name, image, exc)
        try:
            with contextlib.suppress(docker.errors.NotFound):
                client.remove_container(name, force=True)
            client.rename(previous["Id"], name)
            client.start(previous["Id"])
        except docker.errors.APIError as back:
            log.error("could not put %s back (%s); a retry or the rollback goes on from here", name, back)
        raise DockerRefused(f"container {name!r} could not be recreated on image {image!r}: {exc}") from exc
    log.info("%s recreated on %s (id %s)", name, image, new["Id"][:12])
    return str(new["Id"])


def drop_previous(client: APIClient, name: str, log: logging.Logger) -> None:
    """Remove ``<name>_expand_previous`` (the swap is over: the new container passed its health gate)."""
    with docker_errors(f"removing {aside_name(name)!r}"), contextlib.suppress(docker.errors.NotFound):
        client.remove_container(aside_name(name), v=False, force=True)
        log.info("removed %s", aside_name(name))


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
