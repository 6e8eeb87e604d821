"""``DockerDeployOperator``: the runbook's 'Deploy New Code' (and its way back) over the docker provider.

Thin: the client comes from ``DockerHook`` (or straight from ``docker_url``), the work from
:mod:`airflow_provider_expand.engine.deploy.release`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any, cast

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowSkipException

from airflow_provider_expand.engine.deploy.release import (
    DeployTarget,
    recorded_previous_image,
    release,
    roll_back_release,
)
from airflow_provider_expand.engine.deploy.run import DeployResult
from airflow_provider_expand.engine.errors import GuardRefusedError
from airflow_provider_expand.engine.ledger.store import DEFAULT_SCHEMA, Ledger
from airflow_provider_expand.engine.lifecycle import Lifecycle
from airflow_provider_expand.hooks.docker import docker_api
from airflow_provider_expand.hooks.postgres import postgres_connector
from airflow_provider_expand.masking import mask_url_secrets
from airflow_provider_expand.operators.queues import RollbackQueueHold
from airflow_provider_expand.retries import ClassifiedErrors
from airflow_provider_expand.templated import as_bool


class DockerDeployOperator(ClassifiedErrors, BaseOperator):
    """Recreate ``container`` on ``image`` and wait for ``health_url``; with ``rollback``, go back to the
    image the ledger recorded before the deploy (skipped when there was no deploy)."""

    template_fields: Sequence[str] = ("image", "is_dry_run")
    ui_color = "#d5e8f7"

    def __init__(
        self,
        *,
        migration_id: str,
        postgres_conn_id: str,
        container: str,
        health_url: str,
        image: str | None = None,
        health_timeout: dt.timedelta = dt.timedelta(minutes=5),
        docker_url: str | None = None,
        docker_conn_id: str | None = None,
        rollback: bool = False,
        ledger_schema: str = DEFAULT_SCHEMA,
        dry_run: bool | str = False,
        queues: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        mask_url_secrets(health_url, docker_url)
        if not rollback and not image:
            raise ValueError(f"{kwargs.get('task_id')}: image is required to deploy")
        self.migration_id = migration_id
        self.postgres_conn_id = postgres_conn_id
        self.target = DeployTarget(container, health_url, health_timeout)
        self.image = image
        self.docker_url = docker_url
        self.docker_conn_id = docker_conn_id
        self.rollback = rollback
        self.ledger_schema = ledger_schema
        self.is_dry_run = dry_run
        self.queue_hold = queues  # with rollback: RollbackQueueHold's config, queues paused around the swap

    def execute(self, context: Context) -> dict[str, object] | None:
        log = cast(logging.Logger, self.log)
        if as_bool(self.is_dry_run):
            what = "roll back" if self.rollback else f"deploy {self.image} to"
            self.log.info("dry run: would %s container %s", what, self.target.container)
            return None
        connect = postgres_connector(self.postgres_conn_id)
        ledger = Ledger(self.ledger_schema)
        lifecycle = Lifecycle(ledger)
        with connect() as conn:
            record = lifecycle.record(conn, self.migration_id)
        if self.rollback and (refused := lifecycle.refuse_rollback(record)):
            raise GuardRefusedError(refused.replace("rollback.sql", "the old container"))
        if not self.rollback and (reason := lifecycle.noop_reason(record, self.task_id)):
            self.log.info(reason)
            return None
        client = docker_api(self.docker_url, self.docker_conn_id)
        if self.rollback:
            swapped: list[DeployResult | None] = []

            def swap() -> None:
                swapped.append(
                    roll_back_release(client, connect, ledger, self.migration_id, self.target, log)
                )

            if self.queue_hold and recorded_previous_image(connect, ledger, self.migration_id) is not None:
                hold = RollbackQueueHold(
                    self.queue_hold, migration_id=self.migration_id, context=context, log=log
                )
                hold.around(swap, lambda: None)
            else:
                swap()
            back = swapped[0]
            if back is None:
                raise AirflowSkipException(f"no deploy of {self.migration_id} recorded: nothing to roll back")
            return back.summary()
        assert self.image is not None
        return release(client, connect, ledger, self.migration_id, self.target, self.image, log).summary()
