"""Whether paused queues have drained: ``LLEN <prefix>:<name>:active`` is 0 for each (runbook, Pasul 1).

One read-only Lua script per queue counts active / waiting / delayed jobs and lists the active jobs
whose ``<id>:lock`` key is gone: their worker died, and they sit in ``active`` until a live worker's
stalled-job check moves them back. Those are reported by id, never waited on in silence. The same
script serves the sensor (sync client) and the trigger (``redis.asyncio``).
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio

from airflow_provider_expand.engine.queues.marker import Marker
from airflow_provider_expand.engine.queues.pause import (
    DEFAULT_PREFIX,
    MARKER_SUFFIX,
    QueueRef,
    lua_source,
    queue_refs,
    redis_errors,
)

MAX_LOCK_CHECKS = 1000  # active jobs whose lock is checked per poke; a drain is about a handful


@dataclass(frozen=True)
class QueueSnapshot:
    """One queue at one moment."""

    queue: str
    active: int
    waiting: int
    delayed: int
    paused: bool
    paused_by: Marker | None
    orphaned: tuple[str, ...] = ()
    live_workers: int | None = None  # worker connections seen in CLIENT LIST; None: not available

    def describe(self) -> str:
        state = "paused" if self.paused else "NOT paused"
        return (
            f"queue {self.queue!r}: active={self.active} waiting={self.waiting} "
            f"delayed={self.delayed} ({state})"
        )

    def orphan_report(self) -> str | None:
        """Which active jobs lost their worker, and who will move them back (a live worker or a human)."""
        if not self.orphaned:
            return None
        ids = ", ".join(self.orphaned)
        head = f"queue {self.queue!r}: active job(s) {ids} have no lock key: their worker died"
        if self.live_workers:
            return (
                f"{head}; {self.live_workers} live worker connection(s) seen, whose stalled-job check "
                "will move them back to the queue (they run again after resume)"
            )
        seen = "no live worker is connected" if self.live_workers == 0 else "CLIENT LIST is unavailable"
        return (
            f"{head}; {seen}, so nothing will move them back: an operator must start a worker for this "
            "queue or move the jobs back (e.g. Job.moveToWait / retry)"
        )


@dataclass(frozen=True)
class DrainStatus:
    """Every queue of a drain at one moment."""

    snapshots: tuple[QueueSnapshot, ...]

    @property
    def drained(self) -> bool:
        return all(s.active == 0 for s in self.snapshots)

    @property
    def only_orphans_left(self) -> bool:
        """Every job still active has lost its worker: nothing will finish it, so waiting is pointless."""
        return all(s.active == len(s.orphaned) for s in self.snapshots)

    @property
    def active(self) -> int:
        return sum(s.active for s in self.snapshots)

    @property
    def orphaned(self) -> dict[str, tuple[str, ...]]:
        return {s.queue: s.orphaned for s in self.snapshots if s.orphaned}

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, for a trigger event and XCom."""
        return {
            "drained": self.drained,
            "queues": [
                {
                    "queue": s.queue,
                    "active": s.active,
                    "waiting": s.waiting,
                    "delayed": s.delayed,
                    "paused": s.paused,
                    "orphaned": list(s.orphaned),
                }
                for s in self.snapshots
            ],
        }

    def timeout_message(self, drain_timeout: dt.timedelta) -> str:
        busy = [s for s in self.snapshots if s.active]
        parts = [s.describe() for s in busy]
        parts += [r for s in busy if (r := s.orphan_report())]
        return f"queues not drained after {drain_timeout}: " + "; ".join(parts)


def log_drain_status(status: DrainStatus, log: logging.Logger) -> None:
    """One line per queue, and a warning for each problem an operator should know about."""
    for snap in status.snapshots:
        log.info("%s", snap.describe())
        if not snap.paused and snap.active:
            log.warning(
                "queue %r is not paused: its workers keep taking new jobs, so it may never drain", snap.queue
            )
        report = snap.orphan_report()
        if report:
            log.warning("%s", report)


def wait_for_drain(
    client: redis.Redis,
    queues: Sequence[str] | str,
    *,
    prefix: str = DEFAULT_PREFIX,
    timeout: dt.timedelta,
    log: logging.Logger,
    poll_interval: dt.timedelta = dt.timedelta(seconds=1),
) -> DrainStatus:
    """Poll until no job is active, only orphaned ones are (reported), or ``timeout``; never raises on it.

    For the rollback, which must go on either way: it logs what is still running when it gives up.
    """
    deadline = time.monotonic() + timeout.total_seconds()
    status = drain_status(client, queues, prefix=prefix)
    while not status.drained:
        if status.only_orphans_left:
            for snap in status.snapshots:
                if report := snap.orphan_report():
                    log.warning("not waiting for them: %s", report)
            return status
        left = deadline - time.monotonic()
        if left <= 0:
            log.warning("%s; going on without them", status.timeout_message(timeout))
            return status
        log_drain_status(status, log)
        time.sleep(min(poll_interval.total_seconds(), left))
        status = drain_status(client, queues, prefix=prefix)
    log.info("queues drained: %s", ", ".join(s.queue for s in status.snapshots))
    return status


def _snapshot_call(ref: QueueRef) -> tuple[list[str], list[Any]]:
    keys = [ref.key(n) for n in ("meta", "wait", "paused", "active", "delayed", "prioritized", "meta-paused")]
    return [*keys, ref.key(MARKER_SUFFIX)], [f"{ref.label}:", MAX_LOCK_CHECKS]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _snapshot(ref: QueueRef, raw: list[Any]) -> QueueSnapshot:
    active, waiting, delayed, paused, paused_by, orphaned = raw
    return QueueSnapshot(
        queue=ref.label,
        active=int(active),
        waiting=int(waiting),
        delayed=int(delayed),
        paused=bool(int(paused)),
        paused_by=Marker.decode(_text(paused_by)),
        orphaned=tuple(_text(i) for i in orphaned),
    )


def _worker_client_names(ref: QueueRef) -> tuple[str, str]:
    """BullMQ workers name their connections ``<prefix>:<base64 name>`` (+ ``:w:<worker name>``)."""
    base = f"{ref.prefix}:{base64.b64encode(ref.name.encode()).decode()}"
    return base, base + ":w:"


def _count_workers(ref: QueueRef, clients: list[dict[str, Any]]) -> int:
    exact, named = _worker_client_names(ref)
    return sum(1 for c in clients if (n := str(c.get("name") or "")) == exact or n.startswith(named))


def drain_status(
    client: redis.Redis, queues: Sequence[str] | str, *, prefix: str = DEFAULT_PREFIX
) -> DrainStatus:
    """Counts for every queue (and live workers where orphaned jobs need one)."""
    refs = queue_refs(queues, prefix)
    script = client.register_script(lua_source("queue_snapshot"))
    snaps: list[QueueSnapshot] = []
    clients: list[dict[str, Any]] | None = None
    fetched = False
    for ref in refs:
        keys, args = _snapshot_call(ref)
        with redis_errors(ref, "reading"):
            snap = _snapshot(ref, script(keys=keys, args=args))
            if snap.orphaned and not fetched:
                clients, fetched = _client_list(client), True
        snaps.append(_with_workers(snap, ref, clients))
    return DrainStatus(tuple(snaps))


async def adrain_status(
    client: redis.asyncio.Redis, queues: Sequence[str] | str, *, prefix: str = DEFAULT_PREFIX
) -> DrainStatus:
    """:func:`drain_status` for ``redis.asyncio``, for the trigger."""
    refs = queue_refs(queues, prefix)
    script = client.register_script(lua_source("queue_snapshot"))
    snaps: list[QueueSnapshot] = []
    clients: list[dict[str, Any]] | None = None
    fetched = False
    for ref in refs:
        keys, args = _snapshot_call(ref)
        with redis_errors(ref, "reading"):
            snap = _snapshot(ref, await script(keys=keys, args=args))
            if snap.orphaned and not fetched:
                clients, fetched = await _aclient_list(client), True
        snaps.append(_with_workers(snap, ref, clients))
    return DrainStatus(tuple(snaps))


def _with_workers(snap: QueueSnapshot, ref: QueueRef, clients: list[dict[str, Any]] | None) -> QueueSnapshot:
    if not snap.orphaned:
        return snap
    workers = None if clients is None else _count_workers(ref, clients)
    return QueueSnapshot(**{**snap.__dict__, "live_workers": workers})


def _client_list(client: redis.Redis) -> list[dict[str, Any]] | None:
    """None where CLIENT is disabled (some managed Redis services)."""
    try:
        return list(client.client_list())
    except redis.ResponseError:
        return None


async def _aclient_list(client: redis.asyncio.Redis) -> list[dict[str, Any]] | None:
    try:
        return list(await client.client_list())
    except redis.ResponseError:
        return None
