"""The paused-by marker tied to a run, the rollback's hold on the queues, and the ledger gate for
``queues.resume``: real Redis (hand-made BullMQ layouts) and the real ledger in PostgreSQL."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time

import psycopg
import pytest
import redis

from airflow_provider_expand.engine.deploy.release import DEPLOY_STEP, ROLLBACK_STEP
from airflow_provider_expand.engine.ledger.store import Ledger
from airflow_provider_expand.engine.queues.drain import wait_for_drain
from airflow_provider_expand.engine.queues.hold import (
    RollbackQueues,
    hold_for_rollback,
    release_after_rollback,
    rollback_owns_queues,
)
from airflow_provider_expand.engine.queues.marker import Marker
from airflow_provider_expand.engine.queues.pause import QueueRef, pause_queue, resume_queue
from tests.engine.queues.test_queues import make_bullmq, marker_of, meta

LOG = logging.getLogger("test.queue_hold")
RUN1 = Marker("m1", "manual__run-1")
RUN2 = Marker("m1", "manual__run-2")
FAST = dt.timedelta(milliseconds=50)


def paused(r: redis.Redis, ref: QueueRef) -> bool:
    return "paused" in meta(r, ref)


def person_pauses(r: redis.Redis, ref: QueueRef) -> None:
    """What BullMQ 6's Queue.pause() does: nothing that names who did it."""
    r.hset(ref.key("meta"), "paused", 1)


def person_resumes(r: redis.Redis, ref: QueueRef) -> None:
    r.hdel(ref.key("meta"), "paused")


def test_a_later_run_does_not_resume_what_an_earlier_run_left_paused(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    ref = make_bullmq(redis_client, redis_prefix, "sync", version="bullmq:6.7.0")
    assert pause_queue(redis_client, ref, marker=RUN1).action == "paused"
    assert marker_of(redis_client, ref) == RUN1

    # run 1 ended without resuming (its teardown never reached Redis); run 2 of the same migration
    again = pause_queue(redis_client, ref, marker=RUN2)
    assert (again.action, again.owner) == ("paused_by_earlier_run", RUN1)
    assert "earlier run" in again.describe() and "operator" in again.describe()
    assert marker_of(redis_client, ref) == RUN1  # nothing recorded for run 2
    assert resume_queue(redis_client, ref, marker=RUN2).action == "not_ours"
    assert paused(redis_client, ref)


def test_a_stale_marker_never_resumes_a_pause_a_person_made_later(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    ref = make_bullmq(redis_client, redis_prefix, "sync", version="bullmq:6.7.0")
    pause_queue(redis_client, ref, marker=RUN1)
    person_resumes(redis_client, ref)  # by hand, while run 1's marker lingers
    person_pauses(redis_client, ref)  # and later by hand again, for their own reasons

    assert pause_queue(redis_client, ref, marker=RUN2).action == "paused_by_earlier_run"
    assert resume_queue(redis_client, ref, marker=RUN2).action == "not_ours"
    assert paused(redis_client, ref)

    # After our own resume the marker is gone: a person's pause that follows is theirs alone.
    other = make_bullmq(redis_client, redis_prefix, "mail", version="bullmq:5.81.5")
    pause_queue(redis_client, other, marker=RUN1)
    assert resume_queue(redis_client, other, marker=RUN1).action == "resumed"
    assert marker_of(redis_client, other) is None
    person_pauses(redis_client, other)
    assert resume_queue(redis_client, other, marker=RUN1).action == "not_ours"  # a retried teardown
    assert pause_queue(redis_client, other, marker=RUN2).action == "already_paused"
    assert resume_queue(redis_client, other, marker=RUN2).action == "not_ours"
    assert paused(redis_client, other)


def test_a_stale_marker_on_a_running_queue_is_replaced_by_the_next_pause(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    ref = make_bullmq(redis_client, redis_prefix, "sync", version="bullmq:6.7.0")
    pause_queue(redis_client, ref, marker=RUN1)
    person_resumes(redis_client, ref)
    assert pause_queue(redis_client, ref, marker=RUN2).action == "paused"
    assert marker_of(redis_client, ref) == RUN2
    assert resume_queue(redis_client, ref, marker=RUN1).action == "not_ours"
    assert resume_queue(redis_client, ref, marker=RUN2).action == "resumed"
    assert not paused(redis_client, ref)


def test_a_first_release_marker_has_no_run_and_resumes_nothing(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    ref = make_bullmq(redis_client, redis_prefix, "sync", version="bullmq:6.7.0")
    person_pauses(redis_client, ref)
    redis_client.set(ref.key("airflow-expand:paused-by"), "m1")  # the bare id the first release wrote
    assert pause_queue(redis_client, ref, marker=RUN1).action == "paused_by_earlier_run"
    assert resume_queue(redis_client, ref, marker=RUN1).action == "not_ours"
    assert paused(redis_client, ref)


def test_the_rollback_takes_over_its_runs_pause_and_only_it_resumes(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    ref = make_bullmq(redis_client, redis_prefix, "sync", version="bullmq:5.81.5")
    mine = make_bullmq(redis_client, redis_prefix, "mail", version="bullmq:5.81.5")
    person_pauses(redis_client, mine)
    redis_client.rename(mine.key("wait"), mine.key("paused"))
    pause_queue(redis_client, ref, marker=RUN1)  # queues.pause of run 1; then the deploy fails
    queues = RollbackQueues(
        names=["sync", "mail"], drain_timeout=dt.timedelta(seconds=5), prefix=redis_prefix
    )

    hold = hold_for_rollback(redis_client, queues, migration_id="m1", run_id=RUN1.run_id, log=LOG)

    assert [p.action for p in hold.paused] == ["already_paused_by_us", "already_paused"]
    assert hold.drain.drained
    assert marker_of(redis_client, ref) == Marker("m1", RUN1.run_id, "rollback")
    assert marker_of(redis_client, mine) is None
    # queues.resume of the same run, racing the rollback: the queue is not its to resume now
    held = resume_queue(redis_client, ref, marker=RUN1)
    assert held.action == "held_by_rollback" and "rollback" in held.describe()
    assert paused(redis_client, ref)

    back = release_after_rollback(redis_client, queues, migration_id="m1", run_id=RUN1.run_id, log=LOG)

    assert [r.action for r in back] == ["resumed", "not_ours"]
    assert not paused(redis_client, ref) and marker_of(redis_client, ref) is None
    assert paused(redis_client, mine)  # the person's pause is theirs
    assert resume_queue(redis_client, ref, marker=RUN1).action == "not_ours"  # the teardown after it


def test_the_rollback_pauses_a_running_queue_afresh(redis_client: redis.Redis, redis_prefix: str) -> None:
    ref = make_bullmq(redis_client, redis_prefix, "sync", version="bullmq:6.7.0")
    queues = RollbackQueues(names=["sync"], drain_timeout=dt.timedelta(seconds=5), prefix=redis_prefix)
    [p] = hold_for_rollback(redis_client, queues, migration_id="m1", run_id="r", log=LOG).paused
    assert p.action == "paused" and paused(redis_client, ref)
    # a retry of the rollback task finds its own hold
    [again] = hold_for_rollback(redis_client, queues, migration_id="m1", run_id="r", log=LOG).paused
    assert again.action == "already_paused_by_us"
    release_after_rollback(redis_client, queues, migration_id="m1", run_id="r", log=LOG)
    assert not paused(redis_client, ref)


def test_drain_waits_for_a_live_job_then_returns(redis_client: redis.Redis, redis_prefix: str) -> None:
    ref = make_bullmq(redis_client, redis_prefix, "sync", version="bullmq:6.7.0")
    redis_client.rpush(ref.key("active"), "7")
    redis_client.set(ref.key("7:lock"), "token", px=30_000)

    def finish() -> None:
        time.sleep(0.5)
        redis_client.delete(ref.key("active"), ref.key("7:lock"))

    threading.Thread(target=finish, daemon=True).start()
    started = time.monotonic()
    status = wait_for_drain(
        redis_client,
        ["sync"],
        prefix=redis_prefix,
        timeout=dt.timedelta(seconds=10),
        log=LOG,
        poll_interval=FAST,
    )
    waited = time.monotonic() - started
    assert status.drained and 0.4 < waited < 5, waited


def test_drain_gives_up_on_orphans_at_once_and_on_live_jobs_at_the_timeout(
    redis_client: redis.Redis, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    ref = make_bullmq(redis_client, redis_prefix, "sync", version="bullmq:6.7.0")
    redis_client.rpush(ref.key("active"), "8")  # no lock: its worker died
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        status = wait_for_drain(
            redis_client,
            ["sync"],
            prefix=redis_prefix,
            timeout=dt.timedelta(minutes=5),
            log=LOG,
            poll_interval=FAST,
        )
    assert time.monotonic() - started < 2
    assert not status.drained and status.orphaned == {ref.label: ("8",)}
    assert "not waiting for them" in caplog.text and "8" in caplog.text

    redis_client.set(ref.key("8:lock"), "token", px=30_000)  # now a live job that never ends
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        status = wait_for_drain(
            redis_client,
            ["sync"],
            prefix=redis_prefix,
            timeout=dt.timedelta(seconds=1),
            log=LOG,
            poll_interval=FAST,
        )
    assert 0.9 < time.monotonic() - started < 4
    assert not status.drained and "going on without them" in caplog.text


def test_ledger_gate_leaves_the_queues_to_a_rollback_that_is_coming_or_running(
    pg_conn: psycopg.Connection,
) -> None:
    ledger = Ledger()
    ledger.ensure(pg_conn)
    gate = lambda: rollback_owns_queues(pg_conn, ledger, "m1")  # noqa: E731
    assert gate() is None  # no deploy: the old code runs throughout, nothing to hold

    ledger.start_step(pg_conn, "m1", DEPLOY_STEP)
    ledger.finish_step(pg_conn, "m1", DEPLOY_STEP, status="failed", error="health check failed")
    assert "did not succeed" in (gate() or "")  # the rollback has not started yet: it is coming
    ledger.start_step(pg_conn, "m1", ROLLBACK_STEP)
    assert "putting the old container back" in (gate() or "")
    ledger.finish_step(pg_conn, "m1", ROLLBACK_STEP, status="failed", error="engine gone")
    assert "putting the old container back (step rollback:deploy failed)" in (gate() or "")
    ledger.start_step(pg_conn, "m1", ROLLBACK_STEP)  # the rollback's retry
    ledger.finish_step(pg_conn, "m1", ROLLBACK_STEP)
    assert gate() is None  # the old container is back (and the rollback resumed what it held)

    # a later run deploys again and fails: the earlier run's rollback:deploy does not count for it
    ledger.start_step(pg_conn, "m1", DEPLOY_STEP)
    assert "did not succeed (step deploy running)" in (gate() or "")  # its worker was killed mid-deploy
    ledger.finish_step(pg_conn, "m1", DEPLOY_STEP, status="failed", error="health check failed")
    assert "did not succeed" in (gate() or "")

    ledger.start_step(pg_conn, "m2", DEPLOY_STEP)
    ledger.finish_step(pg_conn, "m2", DEPLOY_STEP)
    assert rollback_owns_queues(pg_conn, ledger, "m2") is None  # new code healthy on the expanded schema
