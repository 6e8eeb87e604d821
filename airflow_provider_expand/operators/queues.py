"""``PauseQueuesOperator`` / ``ResumeQueuesOperator``: the runbook's queue pause around a migration.

Thin glue over :mod:`airflow_provider_expand.engine.queues`; Redis comes from ``RedisHook``. The resume
is meant as the teardown of the pause: it acts only on queues carrying this migration's marker, so it
is safe to run after a failed pause, a dry run, or twice.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import redis
from airflow.providers.redis.hooks.redis import RedisHook
from airflow.sdk import Context

from airflow_provider_expand.engine.admin_endpoint import validate_admin_url
from airflow_provider_expand.engine.queues import (
    DEFAULT_HTTP_TIMEOUT,
    DEFAULT_PREFIX,
    LAYOUTS,
    QueueError,
    QueueNameError,
    pause_queues,
    queue_refs,
    resume_queues,
    with_timeouts,
)
from airflow_provider_expand.operators.flags import as_bool
from airflow_provider_expand.operators.masking import MasksUrlFields, real_url, url_field
from airflow_provider_expand.retries import ClassifiedErrors

REDIS_TIMEOUT = dt.timedelta(seconds=10)
Result = TypeVar("Result")


def redis_client(redis_conn_id: str, timeout: dt.timedelta = REDIS_TIMEOUT) -> redis.Redis:
    """``RedisHook``'s client, with socket timeouts so a Redis that does not answer fails the task."""
    return with_timeouts(RedisHook(redis_conn_id=redis_conn_id).get_conn(), timeout)


def check_queues_unless_templated(queues: list[str], prefix: str) -> None:
    """Bad queue names fail when the DAG is parsed, unless Jinja still has to render them."""
    if any(isinstance(v, str) and "{{" in v for v in (prefix, *queues)):
        return
    queue_refs(queues, prefix)


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

    def _apply(self, action: Callable[..., list[Result]], **kwargs: Any) -> list[Result]:
        try:
            return action(
                redis_client(self.redis_conn_id),
                self.queues,
                migration_id=self.migration_id,
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
            dry_run=as_bool(self.is_dry_run),
            pause_url=real_url(self.pause_url, self._pause_userinfo),
        )
        return [
            {"queue": r.queue, "layout": r.layout, "version": r.version, "action": r.action} for r in results
        ]


class ResumeQueuesOperator(_QueuesOperator):
    """Resume the queues this migration paused (never one paused before it), then call ``resume_url``."""

    template_fields: Sequence[str] = ("migration_id", "queues", "prefix", "resume_url")
    url_fields: Sequence[str] = ("resume_url",)
    ui_color = "#d9f2d0"

    def __init__(self, *, resume_url: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.resume_url, self._resume_userinfo = url_field(
            validate_admin_url(resume_url, "resume_url") if resume_url else None
        )

    def execute(self, context: Context) -> list[dict[str, str]]:
        results = self._apply(resume_queues, resume_url=real_url(self.resume_url, self._resume_userinfo))
        return [{"queue": r.queue, "layout": r.layout, "action": r.action} for r in results]
