"""``RollbackOperator``: the runbook's 'Rollback Rapid' — rollback.sql, only when there is something to undo.

Its trigger rule is ONE_FAILED, and Airflow counts an upstream_failed as failed: a preflight or drain
failure (nothing applied yet) would trigger it too. The ledger tells whether expand ever started, and the
lifecycle whether the contract did (then the migration is forward-only and this task refuses).
"""

from __future__ import annotations

import functools
import logging
from typing import Any, cast

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowSkipException

from airflow_provider_expand.engine.deploy.release import (
    DeployTarget,
    recorded_previous_image,
    roll_back_release,
)
from airflow_provider_expand.engine.errors import GuardRefusedError
from airflow_provider_expand.engine.ledger.store import Ledger
from airflow_provider_expand.engine.lifecycle import Event, Lifecycle, wait_for_steps_to_stop
from airflow_provider_expand.hooks.docker import docker_api
from airflow_provider_expand.hooks.postgres import postgres_connector
from airflow_provider_expand.masking import mask_url_secrets
from airflow_provider_expand.operators.phase_sql import PhaseSQLOperator
from airflow_provider_expand.operators.queues import RollbackQueueHold

# How long the rollback waits for sibling backfill partitions to see ``rolling_back`` and stop.
SIBLINGS_STOP_WAIT = 60.0


class RollbackOperator(PhaseSQLOperator):
    """Runs rollback.sql when the expand started and the contract did not; skips when there is nothing to
    undo, and fails (refusing, forward-only) once the contract has started."""

    ui_color = "#f8d7da"

    def __init__(
        self, *, deploy: dict[str, Any] | None = None, queues: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        kwargs.setdefault("phase", "rollback")
        super().__init__(**kwargs)
        # DockerDeployOperator arguments (container, health_url, ...): the new code stops before rollback.sql
        self.deploy = deploy
        mask_url_secrets(*(deploy or {}).values())
        # RollbackQueueHold's config: with a deploy, the queues are paused from before the swap until after
        # rollback.sql (without one the old code runs throughout, and rollback.sql needs no pause)
        self.queue_hold = queues

    def _roll_back_container(self) -> None:
        """The recorded previous image back on the container, healthy, before any SQL runs."""
        assert self.deploy is not None
        args = dict(self.deploy)
        client = docker_api(args.pop("docker_url", None), args.pop("docker_conn_id", None))
        target = DeployTarget(args["container"], args["health_url"], args["health_timeout"])
        connect = postgres_connector(self.postgres_conn_id)
        log = cast(logging.Logger, self.log)
        roll_back_release(client, connect, Ledger(self.ledger_schema), self.migration_id, target, log)

    def execute(self, context: Context) -> dict[str, object]:
        lifecycle = Lifecycle(Ledger(self.ledger_schema))
        dry_run = self._dry_run_flag()
        with postgres_connector(self.postgres_conn_id)() as conn:
            conn.autocommit = True
            record = lifecycle.record(conn, self.migration_id)
            expand_step = lifecycle.ledger.step(conn, self.migration_id, "expand") if record else None
            if record is None or (record.phase in ("pending", "rolled_back") and expand_step is None):
                raise AirflowSkipException(
                    f"nothing to roll back: the expand of {self.migration_id} never started "
                    f"(ledger phase {record.phase if record else 'absent'})"
                )
            refused = lifecycle.refuse_rollback(record)
            if refused:
                raise GuardRefusedError(refused)
            if record.phase == "rolled_back":  # a retry after the SQL and the swap were done
                self.log.info(
                    "%s was rolled back at %s: nothing left to undo", self.migration_id, record.rolled_back_at
                )
                if self.queue_hold and not dry_run:
                    self._hold(context).resume()  # what a failed final resume left held
                return {"step": "rollback", "skipped": "already rolled back"}
            self.log.warning("rolling back %s from phase %s", self.migration_id, record.phase)
            if not dry_run:
                # siblings (backfill partitions) read the phase between batches and stop cleanly
                lifecycle.move(conn, self.migration_id, Event.ROLLBACK_STARTED)
                wait_for_steps_to_stop(
                    conn,
                    lifecycle.ledger,
                    self.migration_id,
                    cast(logging.Logger, self.log),
                    SIBLINGS_STOP_WAIT,
                )
        if self.deploy is not None and not dry_run:
            connect = postgres_connector(self.postgres_conn_id)
            if self.queue_hold and recorded_previous_image(connect, lifecycle.ledger, self.migration_id):
                # the rollback owns the queues: paused and drained before the swap, resumed after rollback.sql
                return self._hold(context).around(
                    self._roll_back_container, functools.partial(super().execute, context)
                )
            self._roll_back_container()
        return super().execute(context)

    def _hold(self, context: Context) -> RollbackQueueHold:
        assert self.queue_hold is not None
        return RollbackQueueHold(
            self.queue_hold,
            migration_id=self.migration_id,
            context=context,
            log=cast(logging.Logger, self.log),
        )
