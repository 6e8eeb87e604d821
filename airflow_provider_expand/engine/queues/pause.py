"""Pause and resume BullMQ / Bull queues in Redis the way the libraries themselves do, atomically.

One Lua script per queue (``lua/queue_pause.lua``, ``lua/queue_resume.lua``) reads the layout from
``meta.version`` and changes the state exactly as BullMQ 5, BullMQ 6 or Bull 3 would. The same script
stamps ``<prefix>:<name>:airflow-expand:paused-by`` with the migration id when, and only when, it paused
the queue, so a resume (even a teardown with no XCom, after a pause that failed halfway) never un-pauses
a queue that somebody had paused before the migration.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal, get_args

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from airflow_provider_expand.engine.errors import DefinitiveError, ExpandError, ServiceUnavailableError
from airflow_provider_expand.engine.queues.admin_endpoint import call_admin_endpoint, redact_url
from airflow_provider_expand.engine.queues.marker import Marker, PauseResult, ResumeResult

Layout = Literal["auto", "bullmq5", "bullmq6", "bull3"]
LAYOUTS: tuple[str, ...] = get_args(Layout)
DEFAULT_PREFIX = "bull"
MARKER_SUFFIX = "airflow-expand:paused-by"
RESUME_CHUNK = 5000
DEFAULT_HTTP_TIMEOUT = dt.timedelta(seconds=10)
REDIS_RETRIES = 2

# BullMQ refuses ':' in a queue name; whitespace and glob characters would break SCAN patterns and
# the runbook's redis-cli loops, and are certainly typos.
_BAD_NAME = re.compile(r"[\s*?\[\]\\:]")
_BAD_PREFIX = re.compile(r"[\s*?\[\]\\]")


class QueueError(ExpandError):
    """A queue could not be paused, resumed or read; the message names the queue."""


class QueueRefusedError(QueueError, DefinitiveError):
    """Redis refused a command (a script error, a wrong key type, no permission): a retry does not help."""


class QueueNameError(QueueError, DefinitiveError, ValueError):
    """A queue name or prefix that cannot be a BullMQ queue."""


class QueueLayoutError(QueueError, DefinitiveError):
    """The keys in Redis are not a BullMQ 5, BullMQ 6 or Bull 3 queue (or no queue at all)."""


class QueueConnectionError(QueueError, ServiceUnavailableError):
    """Redis did not answer: retried by the DAG's retry policy."""


@dataclass(frozen=True)
class QueueRef:
    """A queue's name and key prefix: its keys are ``<prefix>:<name>:<suffix>``."""

    prefix: str
    name: str

    @property
    def label(self) -> str:
        return f"{self.prefix}:{self.name}"

    def key(self, suffix: str) -> str:
        return f"{self.prefix}:{self.name}:{suffix}"

    def state_keys(self) -> list[str]:
        """The KEYS of the pause and resume scripts, in the order ``queue_common.lua`` documents."""
        names = ("meta", "wait", "paused", "marker", "events", "meta-paused", "id", "active", "delayed")
        return [*(self.key(n) for n in names), self.key("prioritized"), self.key(MARKER_SUFFIX)]


def queue_refs(queues: Sequence[str] | str, prefix: str = DEFAULT_PREFIX) -> list[QueueRef]:
    """Validate names and prefix before anything touches Redis, so bad input pauses nothing."""
    if not isinstance(prefix, str) or not prefix or _BAD_PREFIX.search(prefix):
        raise QueueNameError(
            f"queue prefix {prefix!r} is not usable: it must be non-empty, without spaces or glob "
            "characters (*?[]\\)"
        )
    names = [queues] if isinstance(queues, str) else list(queues)
    if not names:
        raise QueueNameError("no queue names given")
    refs: list[QueueRef] = []
    for name in names:
        if not isinstance(name, str) or not name:
            raise QueueNameError(f"queue name {name!r} (prefix {prefix!r}) is empty or not a string")
        if _BAD_NAME.search(name):
            raise QueueNameError(
                f"queue name {name!r} (prefix {prefix!r}) contains a space, ':' or a glob character "
                "(*?[]\\); BullMQ queue names cannot"
            )
        if any(r.name == name for r in refs):
            raise QueueNameError(f"queue {name!r} (prefix {prefix!r}) is listed twice")
        refs.append(QueueRef(prefix, name))
    return refs


def admin_marker_key(prefix: str, migration_id: str) -> str:
    """Set while the app's own pause endpoint was called by ``migration_id`` and not yet resumed."""
    return f"{prefix}:airflow-expand:{migration_id}:admin-paused"


def with_timeouts(client: redis.Redis, timeout: dt.timedelta, retries: int = REDIS_RETRIES) -> redis.Redis:
    """Bound how long a silent Redis can stall us (redis-py retries ten times by default).

    Call it on a fresh client, before its first command. Retrying a pause or resume script is harmless.
    """
    seconds = timeout.total_seconds()
    kwargs = client.connection_pool.connection_kwargs
    for name in ("socket_timeout", "socket_connect_timeout"):
        kwargs[name] = seconds
        if f"orig_{name}" in kwargs:  # redis-py 8 keeps these to restore after maintenance relaxations
            kwargs[f"orig_{name}"] = seconds
    client.set_retry(Retry(ExponentialBackoff(cap=min(seconds, 2.0), base=0.1), retries))  # type: ignore[attr-defined]
    return client


@cache
def lua_source(name: str) -> str:
    """A script from ``engine/queues/lua``; pause and resume get the shared prelude prepended."""
    folder = resources.files("airflow_provider_expand.engine.queues").joinpath("lua")
    body = folder.joinpath(f"{name}.lua").read_text(encoding="utf-8")
    if name in ("queue_pause", "queue_resume"):
        return folder.joinpath("queue_common.lua").read_text(encoding="utf-8") + "\n" + body
    return body


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise QueueLayoutError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")


@contextmanager
def redis_errors(ref: QueueRef, doing: str) -> Iterator[None]:
    """Redis errors while ``doing`` ``ref`` as the queues' errors: no answer is transient, a refusal is not."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise QueueConnectionError(f"Redis did not answer while {doing} queue {ref.label!r}: {exc}") from exc
    except redis.RedisError as exc:
        raise QueueRefusedError(f"Redis refused {doing} queue {ref.label!r}: {exc}") from exc


def _run_script(client: redis.Redis, ref: QueueRef, script: str, args: list[Any], doing: str) -> list[str]:
    with redis_errors(ref, doing):
        raw = client.register_script(lua_source(script))(keys=ref.state_keys(), args=args)
    reply = [_text(v) for v in raw]
    if reply[0] == "error":
        raise QueueLayoutError(f"queue {ref.label!r}: {reply[1]}; pass layout= to choose one")
    return reply


def pause_queue(
    client: redis.Redis, ref: QueueRef, *, marker: Marker, layout: str = "auto", dry_run: bool = False
) -> PauseResult:
    """Pause one queue in one atomic script; stamp ``marker`` only if the state changed."""
    _check_layout(layout)
    reply = _run_script(
        client,
        ref,
        "queue_pause",
        [marker.encode(), layout, "1" if dry_run else "0", ref.key("paused")],
        "pausing",
    )
    action, found, version, owner = reply[:4]
    return PauseResult(ref.label, found, version, action, Marker.decode(owner))  # type: ignore[arg-type]


def resume_queue(
    client: redis.Redis,
    ref: QueueRef,
    *,
    marker: Marker,
    layout: str = "auto",
    chunk: int = RESUME_CHUNK,
) -> ResumeResult:
    """Resume one queue if ``marker`` (run and holder) is on it, moving a long paused list back in chunks."""
    _check_layout(layout)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    calls = 0
    first_action = ""
    while True:
        args = [marker.encode(), layout, "1" if calls == 0 else "0", ref.key("resumed"), chunk]
        reply = _run_script(client, ref, "queue_resume", args, "resuming")
        calls += 1
        action, found, version, owner, remaining = reply[0], reply[1], reply[2], reply[3], int(reply[4])
        first_action = first_action or action
        if action in ("not_ours", "held_by_rollback") or remaining == 0:
            owned = Marker.decode(owner)
            return ResumeResult(ref.label, found, version, first_action, owned, calls)  # type: ignore[arg-type]


def pause_queues(
    client: redis.Redis,
    queues: Sequence[str] | str,
    *,
    marker: Marker,
    log: logging.Logger,
    prefix: str = DEFAULT_PREFIX,
    layout: str = "auto",
    dry_run: bool = False,
    pause_url: str | None = None,
    http_timeout: dt.timedelta = DEFAULT_HTTP_TIMEOUT,
) -> list[PauseResult]:
    """Pause every queue, then call the app's ``pause_url``; on any failure resume what this call paused.

    The app endpoint's marker is set before the POST and kept if it fails (a timeout may still have
    paused the app): the resume teardown calls ``resume_url`` whenever it finds the marker.
    """
    refs = queue_refs(queues, prefix)
    _check_layout(layout)
    migration_id = marker.migration_id
    done: list[PauseResult] = []
    try:
        for ref in refs:
            result = pause_queue(client, ref, marker=marker, layout=layout, dry_run=dry_run)
            log.info("%s", result.describe())
            done.append(result)
        if pause_url and dry_run:
            log.info("dry run: would POST %s", redact_url(pause_url))
        elif pause_url:
            # the marker shows which endpoint paused the app, never its credentials
            client.set(admin_marker_key(prefix, migration_id), redact_url(pause_url))
            call_admin_endpoint(
                pause_url,
                payload={"migration_id": migration_id, "queues": [r.name for r in refs]},
                timeout=http_timeout,
                log=log,
            )
    except Exception as exc:
        _undo_pauses(client, refs, done, marker=marker, layout=layout, log=log, cause=exc)
        if isinstance(exc, redis.RedisError):
            raise QueueConnectionError(f"Redis failed while pausing queues under {prefix!r}: {exc}") from exc
        raise
    return done


def _undo_pauses(
    client: redis.Redis,
    refs: list[QueueRef],
    done: list[PauseResult],
    *,
    marker: Marker,
    layout: str,
    log: logging.Logger,
    cause: BaseException,
) -> None:
    """Leave no queue paused by a failed pause run (each undo attempted even if another fails)."""
    changed = [r for r in done if r.changed]
    if not changed:
        return
    log.error(
        "pausing failed (%s); resuming the %d queue(s) this run had paused: %s",
        cause,
        len(changed),
        ", ".join(r.queue for r in changed),
    )
    by_label = {r.label: r for r in refs}
    for result in changed:
        try:
            undone = resume_queue(client, by_label[result.queue], marker=marker, layout=layout)
            log.warning("undo: %s", undone.describe())
        except QueueError as undo_exc:
            log.error(
                "undo: could not resume queue %r (%s); it keeps our marker, so the resume teardown "
                "(ResumeQueuesOperator) will resume it",
                result.queue,
                undo_exc,
            )


def resume_queues(
    client: redis.Redis,
    queues: Sequence[str] | str,
    *,
    marker: Marker,
    log: logging.Logger,
    prefix: str = DEFAULT_PREFIX,
    layout: str = "auto",
    resume_url: str | None = None,
    http_timeout: dt.timedelta = DEFAULT_HTTP_TIMEOUT,
) -> list[ResumeResult]:
    """Resume the queues this migration paused (all of them attempted), then the app's ``resume_url``."""
    refs = queue_refs(queues, prefix)
    _check_layout(layout)
    migration_id = marker.migration_id
    results: list[ResumeResult] = []
    errors: list[Exception] = []
    for ref in refs:
        try:
            result = resume_queue(client, ref, marker=marker, layout=layout)
        except QueueError as exc:
            log.error("%s", exc)
            errors.append(exc)
            continue
        log.info("%s", result.describe())
        results.append(result)
    if any(r.action == "held_by_rollback" for r in results):
        if resume_url:
            log.info(
                "not calling %s: the rollback holds the queues and resumes the app", redact_url(resume_url)
            )
    else:
        try:
            _resume_admin_endpoint(client, prefix, migration_id, resume_url, http_timeout, log)
        except Exception as exc:
            log.error("%s", exc)
            errors.append(exc)
    if errors:
        # transient when Redis only did not answer: the retry policy tries again
        transient = all(isinstance(e, QueueConnectionError) for e in errors)
        cls = QueueConnectionError if transient else QueueError
        raise cls("resume incomplete: " + "; ".join(str(e) for e in errors))
    return results


def _resume_admin_endpoint(
    client: redis.Redis,
    prefix: str,
    migration_id: str,
    resume_url: str | None,
    http_timeout: dt.timedelta,
    log: logging.Logger,
) -> None:
    marker = admin_marker_key(prefix, migration_id)
    try:
        paused_url = client.get(marker)
    except redis.RedisError as exc:
        raise QueueConnectionError(f"Redis failed while reading {marker!r}: {exc}") from exc
    if paused_url is None:
        if resume_url:
            log.info(
                "not calling %s: this migration did not call the app's pause endpoint", redact_url(resume_url)
            )
        return
    if not resume_url:
        log.warning(
            "this migration paused the app through %s but no resume_url is configured: resume the app by hand",
            redact_url(_text(paused_url)),
        )
        return
    call_admin_endpoint(resume_url, payload={"migration_id": migration_id}, timeout=http_timeout, log=log)
    client.delete(marker)
