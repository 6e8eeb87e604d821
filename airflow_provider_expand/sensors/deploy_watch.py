"""``DeployWatchSensor``: the runbook's 'Escalation Path' after the deploy.

For ``watch`` from the deploy it keeps checking health, the container's error lines and the 5xx rate; a
problem that lasts ``escalate_after`` fails the task (no retry), which triggers the rollback.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any, cast

import pendulum
from airflow.sdk import BaseSensorOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_expand.engine.deploy.watch import DeployWatch, EscalationError, WatchLimits
from airflow_provider_expand.engine.ledger.store import DEFAULT_SCHEMA, Ledger
from airflow_provider_expand.guards import forward_only_noop
from airflow_provider_expand.hooks.docker import docker_api
from airflow_provider_expand.hooks.postgres import postgres_connector
from airflow_provider_expand.masking import mask_url_secrets
from airflow_provider_expand.retries import ClassifiedErrors
from airflow_provider_expand.templated import as_bool

WATCH_STEP = "watch"


class DeployWatchSensor(ClassifiedErrors, BaseSensorOperator):
    """Succeeds once ``watch`` has passed since the ledger's ``deployed_at`` with no problem open."""

    template_fields: Sequence[str] = ("is_dry_run",)
    ui_color = "#e2f0d9"

    def __init__(
        self,
        *,
        migration_id: str,
        postgres_conn_id: str,
        container: str,
        health_url: str,
        watch: dt.timedelta = dt.timedelta(minutes=15),
        escalate_after: dt.timedelta = dt.timedelta(minutes=15),
        max_error_lines: int = 0,
        metrics_url: str | None = None,
        max_5xx_rate: float | None = None,
        docker_url: str | None = None,
        docker_conn_id: str | None = None,
        ledger_schema: str = DEFAULT_SCHEMA,
        dry_run: bool | str = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", min(max(watch.total_seconds() / 30, 1.0), 30.0))
        kwargs.setdefault("timeout", (watch + escalate_after + dt.timedelta(minutes=10)).total_seconds())
        kwargs.setdefault("mode", "poke")  # the watch keeps its state (error streak) between pokes
        super().__init__(**kwargs)
        mask_url_secrets(health_url, metrics_url, docker_url)
        self.migration_id = migration_id
        self.postgres_conn_id = postgres_conn_id
        self.container = container
        self.limits = WatchLimits(health_url, max_error_lines, metrics_url, max_5xx_rate)
        self.watch = watch
        self.escalate_after = escalate_after
        self.docker_url = docker_url
        self.docker_conn_id = docker_conn_id
        self.ledger_schema = ledger_schema
        self.is_dry_run = dry_run
        self._watch: DeployWatch | None = None
        self._until: dt.datetime | None = None

    def _start(self) -> DeployWatch:
        ledger = Ledger(self.ledger_schema)
        with postgres_connector(self.postgres_conn_id)() as conn:
            conn.autocommit = True
            record = ledger.get(conn, self.migration_id)
            if record is None or record.deployed_at is None:
                raise AirflowFailException(
                    f"migration {self.migration_id!r} has no deployed_at in the ledger: nothing to watch"
                )
            ledger.start_step(conn, self.migration_id, WATCH_STEP)
        self._until = record.deployed_at + self.watch
        self.log.info("watching %s until %s", self.container, self._until.isoformat())
        return DeployWatch(
            docker_api(self.docker_url, self.docker_conn_id),
            self.container,
            self.limits,
            self.escalate_after,
            record.deployed_at,
            cast(logging.Logger, self.log),
        )

    def _finish(self, error: str | None = None) -> None:
        with postgres_connector(self.postgres_conn_id)() as conn:
            conn.autocommit = True
            Ledger(self.ledger_schema).finish_step(
                conn, self.migration_id, WATCH_STEP, status="failed" if error else "success", error=error
            )

    def poke(self, context: Context) -> bool:
        if as_bool(self.is_dry_run):
            self.log.info("dry run: not watching %s", self.container)
            return True
        if self._watch is None:
            log = cast(logging.Logger, self.log)
            if forward_only_noop(
                self.postgres_conn_id, self.ledger_schema, self.migration_id, self.task_id, log
            ):
                return True
            self._watch = self._start()
        now = pendulum.now("UTC")
        try:
            self._watch.poll(now)
        except EscalationError as exc:
            self._finish(str(exc)[:2000])
            raise AirflowFailException(f"escalating: {exc}") from exc
        assert self._until is not None
        if now < self._until:
            return False
        if self._watch.problem_since is not None:
            # a problem still open at the end of the watch is watched until it clears or escalates
            return False
        self.log.info(
            "watch over: %s healthy for %s; %d error lines in all",
            self.container,
            self.watch,
            self._watch.error_total,
        )
        self._finish()
        return True
