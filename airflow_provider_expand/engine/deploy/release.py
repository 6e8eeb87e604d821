"""The deploy step as the ledger records it: the image to go back to is written before the container is
touched, so a rollback (or a retry of the deploy) knows it even if the worker died mid-deploy; the swap
itself resumes from the containers it finds (``<name>_expand_previous`` included).

The ``deploy`` step's checkpoint (``last_key``) holds the previous image; ``rollback:deploy`` is the way back.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from docker import APIClient

from airflow_provider_expand.engine.database import Connector
from airflow_provider_expand.engine.deploy.container_swap import image_before, swap_state
from airflow_provider_expand.engine.deploy.docker_client import ensure_image
from airflow_provider_expand.engine.deploy.run import DeployResult, deploy
from airflow_provider_expand.engine.ledger.store import Ledger
from airflow_provider_expand.engine.lifecycle import Event, Lifecycle

DEPLOY_STEP = "deploy"
ROLLBACK_STEP = "rollback:deploy"


@dataclass(frozen=True)
class DeployTarget:
    """Which container to deploy and how to tell it is healthy."""

    container: str
    health_url: str
    health_timeout: dt.timedelta


def recorded_previous_image(connect: Connector, ledger: Ledger, migration_id: str) -> str | None:
    """The image the container ran before this migration's deploy, or None when the deploy never began."""
    with connect() as conn:
        if not ledger.installed(conn):
            return None
        step = ledger.step(conn, migration_id, DEPLOY_STEP)
    return step.last_key if step else None


def release(
    client: APIClient,
    connect: Connector,
    ledger: Ledger,
    migration_id: str,
    target: DeployTarget,
    image: str,
    log: logging.Logger,
) -> DeployResult:
    """Deploy ``image`` as the ``deploy`` step: previous image recorded first, phase ``deployed`` after."""
    with connect() as conn:
        conn.autocommit = True
        ledger.ensure(conn)  # also usable outside a migration DAG, whose begin task creates it
        step = ledger.start_step(conn, migration_id, DEPLOY_STEP)
        previous = step.last_key  # a retry keeps the image from before the first attempt
        if previous is None:
            image_id = str(ensure_image(client, image, log)["Id"])
            previous = image_before(client, swap_state(client, target.container), image_id)
            with conn.transaction(), conn.cursor() as cur:
                ledger.checkpoint(cur, migration_id, DEPLOY_STEP, 0, last_key=previous, rows_added=0)
        log.info("deploying %s to %s (previous image %s, recorded)", image, target.container, previous)
    try:
        result = deploy(
            client,
            target.container,
            image,
            health_url=target.health_url,
            health_timeout=target.health_timeout,
            log=log,
            previous_image=previous,
        )
    except Exception as exc:
        Lifecycle(ledger).record_failure(connect, migration_id, DEPLOY_STEP, exc, log)
        raise
    with connect() as conn:
        conn.autocommit = True
        ledger.finish_step(conn, migration_id, DEPLOY_STEP)
        Lifecycle(ledger).move(conn, migration_id, Event.DEPLOYED)
    return result


def roll_back_release(
    client: APIClient,
    connect: Connector,
    ledger: Ledger,
    migration_id: str,
    target: DeployTarget,
    log: logging.Logger,
) -> DeployResult | None:
    """Put the recorded previous image back on the container (None when the deploy never began)."""
    previous = recorded_previous_image(connect, ledger, migration_id)
    if previous is None:
        log.info("no deploy recorded for %s: the container was never touched", migration_id)
        return None
    log.warning("rolling %s back to %s (stopping the new code first)", target.container, previous)
    with connect() as conn:
        conn.autocommit = True
        ledger.start_step(conn, migration_id, ROLLBACK_STEP)
    try:
        result = deploy(
            client,
            target.container,
            previous,
            health_url=target.health_url,
            health_timeout=target.health_timeout,
            log=log,
        )
    except Exception as exc:
        Lifecycle(ledger).record_failure(connect, migration_id, ROLLBACK_STEP, exc, log)
        raise
    with connect() as conn:
        conn.autocommit = True
        ledger.finish_step(conn, migration_id, ROLLBACK_STEP)
    return result
