"""The Docker client of the deploy steps: ``DockerHook``'s when a connection names a registry login."""

from __future__ import annotations

from typing import cast

from airflow.providers.docker.hooks.docker import DockerHook
from docker import APIClient

from airflow_provider_expand.engine.deploy.docker_client import docker_client

DEFAULT_DOCKER_URL = "unix:///var/run/docker.sock"


def docker_api(docker_url: str | None = None, docker_conn_id: str | None = None) -> APIClient:
    """``DockerHook``'s client when a connection (registry login) is named, else one for ``docker_url``."""
    if docker_conn_id:
        return cast(
            APIClient,
            DockerHook(docker_conn_id=docker_conn_id, base_url=docker_url or DEFAULT_DOCKER_URL).get_conn(),
        )
    return docker_client(docker_url or DEFAULT_DOCKER_URL)
