"""The Docker engine as the deploy sees it: a pinged client, containers and images by name, and its errors
sorted into the engine's hierarchy (an engine that does not answer is transient, a missing container or
image is definitive)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker import APIClient

from airflow_provider_expand.engine.errors import (
    DefinitiveError,
    ExpandError,
    ServiceUnavailableError,
)
from airflow_provider_expand.engine.redact import redact_url


class DeployError(ExpandError):
    """A deploy or a rollback of a container failed; the message names the container and image."""


class EngineUnreachable(DeployError, ServiceUnavailableError):
    """The Docker engine did not answer: a later try may."""


class ContainerNotFound(DeployError, DefinitiveError):
    pass


class ImageNotFound(DeployError, DefinitiveError):
    pass


class HealthCheckFailed(DeployError, DefinitiveError):
    pass


class DockerRefused(DeployError, DefinitiveError):
    """The engine refused a step of the swap (a port taken, a bad configuration)."""


@contextmanager
def docker_errors(what: str) -> Iterator[None]:
    """Docker and connection errors escaping the block as :class:`DeployError` classes, naming ``what``."""
    try:
        yield
    except ExpandError:
        raise
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise EngineUnreachable(f"{what}: the docker engine did not answer: {redact_url(str(exc))}") from exc
    except docker.errors.NotFound as exc:
        raise ContainerNotFound(f"{what}: {redact_url(str(exc))}") from exc
    except docker.errors.DockerException as exc:
        raise DockerRefused(f"{what}: {redact_url(str(exc))}") from exc


def docker_client(base_url: str, *, timeout: int = 60) -> APIClient:
    """A low-level client for ``base_url``, pinged first so an unreachable engine fails here, clearly."""
    shown = redact_url(base_url)
    try:
        client = APIClient(base_url=base_url, version="auto", timeout=timeout)
        client.ping()
    except (docker.errors.DockerException, OSError, requests.exceptions.RequestException) as exc:
        raise EngineUnreachable(f"docker engine at {shown} is unreachable: {redact_url(str(exc))}") from exc
    return client


def find_container(client: APIClient, container: str) -> dict[str, Any] | None:
    """``docker inspect`` of ``container``, None when there is none of that name."""
    try:
        return dict(client.inspect_container(container))
    except docker.errors.NotFound:
        return None


def inspect_container(client: APIClient, container: str) -> dict[str, Any]:
    info = find_container(client, container)
    if info is None:
        raise ContainerNotFound(f"container {container!r} not found on the docker engine")
    return info


def image_of(client: APIClient, info: dict[str, Any]) -> str:
    """The image a container runs, by the name it was created from while that name still points at it,
    else by id (a tag moved since would send a rollback to the wrong code)."""
    name, image_id = str(info["Config"]["Image"]), str(info["Image"])
    try:
        if client.inspect_image(name)["Id"] == image_id:
            return name
    except docker.errors.NotFound:
        pass
    return image_id


def running_image(client: APIClient, container: str) -> str:
    """:func:`image_of` the container named ``container``."""
    return image_of(client, inspect_container(client, container))


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
            f"image {image!r} exists neither locally nor in a reachable registry: {redact_url(str(exc))}"
        ) from exc
