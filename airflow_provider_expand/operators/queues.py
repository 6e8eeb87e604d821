"""``PauseQueuesOperator`` / ``ResumeQueuesOperator``: the runbook's queue pause around a migration.

Thin glue over :mod:`airflow_provider_expand.engine.queues.pause`; Redis comes from ``RedisHook``. The resume
is meant as the teardown of the pause: it acts only on queues carrying this run's marker, so it is safe
to run after a failed pause, a dry run, or twice; with the ledger at hand it also leaves the queues to a
rollback that holds them (:func:`~airflow_provider_expand.engine.queues.hold.rollback_owns_queues`).
:class:`RollbackQueueHold` is the rollback's side of it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from airflow.sdk import Context

from airflow_provider_expand.engine.ledger.store import DEFAULT_SCHEMA, Ledger
from airflow_provider_expand.engine.queues.admin_endpoint import validate_admin_url
from airflow_provider_expand.engine.queues.hold import (
    RollbackQueues,
    hold_for_rollback,
    release_after_rollback,
    rollback_owns_queues,
)
from airflow_provider_expand.engine.queues.marker import Marker
from airflow_provider_expand.engine.queues.pause import (
    DEFAULT_HTTP_TIMEOUT,
    DEFAULT_PREFIX,
    LAYOUTS,
    QueueError,
    QueueNameError,
    pause_queues,
    resume_queues,
)
from airflow_provider_expand.hooks.postgres import postgres_connector
from airflow_provider_expand.hooks.redis import redis_client
from airflow_provider_expand.masking import MasksUrlFields, real_url, url_field
from airflow_provider_expand.retries import ClassifiedErrors
from airflow_provider_expand.templated import as_bool, check_queues_unless_templated

Result = TypeVar("Result")


def run_id_of(context: Context) -> str:
    """The Airflow run's id: the paused-by marker names it, so only this run resumes what it paused."""
    run_id = context.get("run_id") or getattr(context.get("dag_run"), "run_id", None)
    if not run_id:
        raise ValueError("no run_id in the task context: the queues' paused-by marker needs it")
    return str(run_id)


def _check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    return layout


class _QueuesOperator(ClassifiedErrors, MasksUrlFields):
    """What pause and resume share: the queues, their Redis connection, and errors that name it."""

    def __init__(
        self,
        *,
        migration_id: str,
        redis_conn_id: str,
        queues: list[str],
        prefix: str = DEFAULT_PREFIX,
        layout: str = "auto",
        http_timeout: dt.timedelta = DEFAULT_HTTP_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_queues_unless_templated(queues, prefix)
        self.migration_id = migration_id
        self.redis_conn_id = redis_conn_id
        self.queues = queues
        self.prefix = prefix
        self.layout = _check_layout(layout)
        self.http_timeout = http_timeout

    def _apply(self, action: Callable[..., list[Result]], context: Context, **kwargs: Any) -> list[Result]:
        try:
            return action(
                redis_client(self.redis_conn_id),
                self.queues,
                marker=Marker(self.migration_id, run_id_of(context)),
                log=cast(logging.Logger, self.log),
                prefix=self.prefix,
                layout=self.layout,
                http_timeout=self.http_timeout,
                **kwargs,
            )
        except QueueNameError:
            raise
        except QueueError as exc:  # name the Airflow connection too
            raise type(exc)(f"Redis connection {self.redis_conn_id!r}: {exc}") from exc


class PauseQueuesOperator(_QueuesOperator):
    """Pause BullMQ / Bull queues (and the app, through ``pause_url``) before the EXPAND phase.

    Returns, as XCom, one dict per queue: what was done (``paused``, ``already_paused``, ...).
    """

    template_fields: Sequence[str] = ("migration_id", "queues", "prefix", "pause_url", "is_dry_run")
    url_fields: Sequence[str] = ("pause_url",)
    ui_color = "#fde2c4"

    def __init__(self, *, pause_url: str | None = None, dry_run: bool | str = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pause_url, self._pause_userinfo = url_field(
            validate_admin_url(pause_url, "pause_url") if pause_url else None
        )
        self.is_dry_run = dry_run  # BaseOperator.dry_run is a method

    def execute(self, context: Context) -> list[dict[str, str]]:
        results = self._apply(
            pause_queues,
            context,
            dry_run=as_bool(self.is_dry_run),
            pause_url=real_url(self.pause_url, self._pause_userinfo),
        )
        return [
            {"queue": r.queue, "layout": r.layout, "version": r.version, "action": r.action} for r in results
        ]


class ResumeQueuesOperator(_QueuesOperator):
    """Resume the queues this run paused (never one paused before it), then call ``resume_url``.

    With ``postgres_conn_id`` it first asks the ledger whether a rollback holds the queues (a deploy that
    did not succeed, the old container not back yet): then it does nothing and says so, since the
    rollback resumes them once the old code runs again.
    """

    template_fields: Sequence[str] = ("migration_id", "queues", "prefix", "resume_url")
    url_fields: Sequence[str] = ("resume_url",)
    ui_color = "#d9f2d0"

    def __init__(
        self,
        *,
        resume_url: str | None = None,
        postgres_conn_id: str | None = None,
        ledger_schema: str = DEFAULT_SCHEMA,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.resume_url, self._resume_userinfo = url_field(
            validate_admin_url(resume_url, "resume_url") if resume_url else None
        )
        self.postgres_conn_id = postgres_conn_id
        self.ledger_schema = ledger_schema

    def execute(self, context: Context) -> list[dict[str, str]]:
        if self.postgres_conn_id:
            with postgres_connector(self.postgres_conn_id)() as conn:
                reason = rollback_owns_queues(conn, Ledger(self.ledger_schema), self.migration_id)
            if reason:
                self.log.warning("not resuming queues %s: %s", ", ".join(self.queues), reason)
                return [{"queue": q, "layout": "", "action": "held_by_rollback"} for q in self.queues]
        results = self._apply(
            resume_queues, context, resume_url=real_url(self.resume_url, self._resume_userinfo)
        )
        if not any(r.changed for r in results):
            self.log.info(
                "nothing to resume: no queue carries this run's marker (resumed already, or never ours)"
            )
        return [{"queue": r.queue, "layout": r.layout, "action": r.action} for r in results]


class RollbackQueueHold:
    """The rollback's hold on the queues, for the tasks that put the old container back.

    ``config`` is what ``dag_factory`` passes: ``redis_conn_id``, ``queues``, ``prefix``, ``drain_timeout``
    and ``resume_url``. Pause and drain before the swap; resume after the swap and rollback.sql.
    """

    def __init__(
        self, config: dict[str, Any], *, migration_id: str, context: Context, log: logging.Logger
    ) -> None:
        self.redis_conn_id = str(config["redis_conn_id"])
        self.queues = RollbackQueues(
            names=list(config["queues"]),
            drain_timeout=config["drain_timeout"],
            prefix=config.get("prefix", DEFAULT_PREFIX),
            resume_url=config.get("resume_url"),
        )
        self.migration_id = migration_id
        self.run_id = run_id_of(context)
        self.log = log

    def pause_and_drain(self) -> None:
        client = redis_client(self.redis_conn_id)
        try:
            hold_for_rollback(
                client, self.queues, migration_id=self.migration_id, run_id=self.run_id, log=self.log
            )
        finally:
            client.close()

    def around(self, swap: Callable[[], object], then: Callable[[], Result]) -> Result:
        """Pause and drain, ``swap`` the container back, ``then`` (rollback.sql), resume.

        A failed ``then`` still resumes: the old container is back, and the old code works on any schema
        between the expanded and the original one (rollback.sql only removes what expand added). A failed
        ``swap`` keeps the queues paused: which code runs is then unknown.
        """
        self.pause_and_drain()
        try:
            swap()
        except BaseException as exc:
            self._keep_paused(exc)
            raise
        try:
            result = then()
        except BaseException:
            self.resume(quiet=True)  # the rollback's own error is the one to raise
            raise
        self.resume()
        return result

    def resume(self, *, quiet: bool = False) -> None:
        client = redis_client(self.redis_conn_id)
        try:
            release_after_rollback(
                client, self.queues, migration_id=self.migration_id, run_id=self.run_id, log=self.log
            )
        except QueueError as exc:
            if not quiet:
                raise
            self.log.error("could not resume the queues after the failed rollback: %s", exc)
        finally:
            client.close()

    def _keep_paused(self, error: BaseException) -> None:
        self.log.error(
            "the old container is not back (%s): queues %s stay paused under this run's rollback marker; "
            "a retry of the rollback resumes them once the swap succeeds, or resume them by hand",
            error,
            ", ".join(self.queues.names),
        )
