"""The rollback's hold on the queues, and the gate that keeps ``queues.resume`` off them meanwhile.

Queues run only when the schema and the running code agree. When a rollback must put the old container
back, it pauses the queues (its marker's holder is ``rollback``) and waits for the drain before the swap,
and resumes them after the swap and ``rollback.sql``. Without a deploy the old code runs throughout and
``rollback.sql`` only removes what expand added, which the old code never used: no hold is needed then.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
import redis

from airflow_provider_expand.engine.deploy.release import DEPLOY_STEP, ROLLBACK_STEP
from airflow_provider_expand.engine.ledger.store import Ledger
from airflow_provider_expand.engine.queues.drain import DrainStatus, wait_for_drain
from airflow_provider_expand.engine.queues.marker import Marker, PauseResult, ResumeResult
from airflow_provider_expand.engine.queues.pause import DEFAULT_PREFIX, pause_queues, resume_queues


@dataclass(frozen=True)
class RollbackQueues:
    """The spec's queues, as the rollback holds them."""

    names: Sequence[str]
    drain_timeout: dt.timedelta
    prefix: str = DEFAULT_PREFIX
    resume_url: str | None = None
    layout: str = "auto"


@dataclass(frozen=True)
class Hold:
    """What the rollback's pause found, and the drain it waited for."""

    paused: tuple[PauseResult, ...]
    drain: DrainStatus


def hold_for_rollback(
    client: redis.Redis,
    queues: RollbackQueues,
    *,
    migration_id: str,
    run_id: str,
    log: logging.Logger,
    poll_interval: dt.timedelta = dt.timedelta(seconds=1),
) -> Hold:
    """Pause under the rollback's marker (taking over this run's own pause) and wait for the drain.

    The drain is bounded by ``drain_timeout`` and gives up on orphaned jobs (reported by id): the rollback
    goes on either way, since getting the old code back matters more than the jobs still running.
    A queue paused by somebody else stays theirs: it is neither marked nor resumed.
    """
    marker = Marker(migration_id, run_id, "rollback")
    paused = pause_queues(
        client, list(queues.names), marker=marker, log=log, prefix=queues.prefix, layout=queues.layout
    )
    drain = wait_for_drain(
        client,
        list(queues.names),
        prefix=queues.prefix,
        timeout=queues.drain_timeout,
        log=log,
        poll_interval=poll_interval,
    )
    return Hold(tuple(paused), drain)


def release_after_rollback(
    client: redis.Redis, queues: RollbackQueues, *, migration_id: str, run_id: str, log: logging.Logger
) -> list[ResumeResult]:
    """Resume what :func:`hold_for_rollback` holds (and the app through ``resume_url``); clears the marker."""
    marker = Marker(migration_id, run_id, "rollback")
    return resume_queues(
        client,
        list(queues.names),
        marker=marker,
        log=log,
        prefix=queues.prefix,
        layout=queues.layout,
        resume_url=queues.resume_url,
    )


def rollback_owns_queues(conn: psycopg.Connection, ledger: Ledger, migration_id: str) -> str | None:
    """Why ``queues.resume`` must leave the queues to the rollback right now, or None when it may resume.

    Read from the ledger's deploy steps, not from timing: a deploy that did not succeed, with the old
    container not put back since, means the rollback is coming (or running) and resumes the queues itself.
    A ``rollback:deploy`` that ended before this deploy did is an earlier run's, and does not count. Once
    the rollback has paused a queue its marker says so too (``held_by_rollback``). The phase alone is not
    used: ``rolling_back`` also covers rollbacks without a deploy, which never hold the queues.
    """
    if not ledger.installed(conn):
        return None
    deploy = ledger.step(conn, migration_id, DEPLOY_STEP)
    if deploy is None:
        return None  # the container was never touched: the old code runs
    back = ledger.step(conn, migration_id, ROLLBACK_STEP)
    # A deploy whose worker died never finished: no ended rollback:deploy can be told to be for it, so the
    # queues stay the rollback's (if that rollback already resumed them, nothing carries our marker anyway).
    current = back is not None and (
        back.status == "running"
        or (
            back.finished_at is not None
            and deploy.finished_at is not None
            and back.finished_at >= deploy.finished_at
        )
    )
    if back is not None and current:
        if back.status == "success":
            return None  # the old container is back (and the rollback resumed what it held)
        return (
            f"the rollback of {migration_id} is putting the old container back (step {ROLLBACK_STEP} "
            f"{back.status}): it holds the queues and resumes them once the old code runs again"
        )
    if deploy.status == "success":
        return None  # the new code is healthy on the expanded schema
    return (
        f"the deploy of {migration_id} did not succeed (step {DEPLOY_STEP} {deploy.status}) and the old "
        "container is not back yet: the rollback pauses the queues, puts it back, and resumes them"
    )
