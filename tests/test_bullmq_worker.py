"""A real BullMQ worker (Node, BullMQ 5 and 6) paused, drained and resumed by our operators and sensor.

The worker (tests/bullmq/worker.mjs) runs 1-second jobs two at a time and records each start and finish
in a Redis list, so the test sees exactly which jobs ran, when, and how often. BullMQ is installed with
``npm ci`` from the committed lockfiles into a cache directory (``EXPAND_TEST_NODE_CACHE``, default
``~/.cache/airflow-provider-expand``); the test skips only where node or npm are missing.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from airflow.sdk import Context

from airflow_provider_expand.engine.queues.pause import QueueRef
from airflow_provider_expand.operators.queues import PauseQueuesOperator, ResumeQueuesOperator
from airflow_provider_expand.sensors.queues import QueueDrainSensor

BULLMQ = Path(__file__).resolve().parent / "bullmq"
CONTEXT = cast(Context, {"run_id": "manual__test-run"})
JOBS = 8


def _cache_root() -> Path:
    return Path(
        os.environ.get("EXPAND_TEST_NODE_CACHE") or Path.home() / ".cache" / "airflow-provider-expand"
    )


def bullmq_app(major: int) -> Path:
    """A directory with BullMQ ``major`` installed from our lockfile and the worker/producer beside it."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip(f"the real BullMQ worker test needs Node.js and npm on PATH (node={node}, npm={npm})")
    source = BULLMQ / f"v{major}"
    manifest = (source / "package.json").read_bytes() + (source / "package-lock.json").read_bytes()
    target = _cache_root() / f"bullmq-v{major}-{hashlib.sha256(manifest).hexdigest()[:12]}"
    target.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".install-v{major}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test runs share the cache
        if not (target / "node_modules" / "bullmq" / "package.json").exists():
            for name in ("package.json", "package-lock.json"):
                shutil.copy(source / name, target / name)
            done = subprocess.run(
                [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=target,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert done.returncode == 0, f"npm ci for BullMQ {major} failed in {target}:\n{done.stderr}"
        for script in ("worker.mjs", "producer.mjs"):
            shutil.copy(BULLMQ / script, target / script)
    return target


def node_env(redis_url: str, prefix: str, **extra: Any) -> dict[str, str]:
    return {**os.environ, "REDIS_URL": redis_url, "PREFIX": prefix, **{k: str(v) for k, v in extra.items()}}


def produce(app: Path, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [shutil.which("node") or "node", "producer.mjs"],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"producer failed:\n{done.stderr}"
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def wait_until(what: str, check: Callable[[], Any], timeout: float, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


class WorkLog:
    """The worker's record of what it did: ``start <id> <ms>`` / ``finish <id> <ms>`` entries."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self.client, self.key = client, key

    def entries(self, kind: str) -> list[str]:
        rows = (e.decode().split() for e in self.client.lrange(self.key, 0, -1))
        return [row[1] for row in rows if row[0] == kind]


@pytest.fixture
def worker_process(tmp_path: Path) -> Iterator[Callable[[Path, dict[str, str]], subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(app: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        out = (tmp_path / "worker.log").open("wb")
        proc = subprocess.Popen(
            [shutil.which("node") or "node", "worker.mjs"],
            cwd=app,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("major", [5, 6])
def test_pause_drain_resume_with_a_real_worker(
    major: int,
    airflow_conn: dict[str, str],
    redis_client: redis.Redis,
    redis_url: str,
    redis_prefix: str,
    worker_process: Callable[[Path, dict[str, str]], subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    app = bullmq_app(major)
    log = WorkLog(redis_client, f"{redis_prefix}:worklog")
    # "mail" was paused with BullMQ's own Queue.pause() before the migration: it must stay paused.
    produce(app, node_env(redis_url, redis_prefix, QUEUE="mail", COUNT=2, PAUSE=1))
    worker = worker_process(
        app, node_env(redis_url, redis_prefix, QUEUE="sync", LOG_KEY=log.key, JOB_MS=1000, CONCURRENCY=2)
    )
    wait_until("the worker to be ready", lambda: log.entries("ready"), 30)
    produced = produce(app, node_env(redis_url, redis_prefix, QUEUE="sync", COUNT=JOBS))
    assert produced["version"].startswith(f"bullmq:{major}.")
    wait_until("two jobs to start", lambda: len(log.entries("start")) >= 2, 15)

    common: dict[str, Any] = {
        "migration_id": "demo_migration",
        "redis_conn_id": "app_redis",
        "queues": ["sync", "mail"],
        "prefix": redis_prefix,
    }
    paused = PauseQueuesOperator(task_id="pause", **common).execute(CONTEXT)
    assert [(r["action"], r["layout"]) for r in paused] == [
        ("paused", f"bullmq{major}"),
        ("already_paused", f"bullmq{major}"),
    ]

    sensor = QueueDrainSensor(
        task_id="drain",
        redis_conn_id="app_redis",
        queues=["sync", "mail"],
        prefix=redis_prefix,
        drain_timeout=dt.timedelta(seconds=30),
    )
    assert sensor.poke(CONTEXT) is False
    assert sensor.last_status is not None
    busy = sensor.last_status.snapshots[0]
    assert busy.active > 0 and busy.orphaned == () and busy.paused
    wait_until("the drain", lambda: sensor.poke(CONTEXT), 15, every=0.2)
    assert sensor.last_status.snapshots[0].active == 0

    started = log.entries("start")
    time.sleep(3)  # a paused queue starts nothing, however long we wait
    assert log.entries("start") == started
    assert len(started) < JOBS
    waiting = sensor.last_status.snapshots[0].waiting
    assert waiting == JOBS - len(started)

    resumed = ResumeQueuesOperator(task_id="resume", **common).execute(CONTEXT)
    assert [r["action"] for r in resumed] == ["resumed", "not_ours"]

    wait_until("every job to finish", lambda: len(log.entries("finish")) >= JOBS, 30)
    time.sleep(0.3)
    starts = log.entries("start")
    assert sorted(starts, key=int) == sorted(produced["ids"], key=int)  # none lost
    assert len(starts) == len(set(starts))  # none run twice
    sync, mail = QueueRef(redis_prefix, "sync"), QueueRef(redis_prefix, "mail")
    wait_until("completed set", lambda: redis_client.zcard(sync.key("completed")) == JOBS, 5)
    assert redis_client.llen(sync.key("active")) == 0
    assert redis_client.hget(sync.key("meta"), "paused") is None
    assert redis_client.hget(mail.key("meta"), "paused") == b"1"
    assert worker.poll() is None, (tmp_path / "worker.log").read_text()


def test_a_killed_worker_leaves_an_active_job_the_sensor_reports_by_id(
    airflow_conn: dict[str, str],
    redis_client: redis.Redis,
    redis_url: str,
    redis_prefix: str,
    worker_process: Callable[[Path, dict[str, str]], subprocess.Popen[bytes]],
) -> None:
    app = bullmq_app(6)
    log = WorkLog(redis_client, f"{redis_prefix}:worklog")
    env = node_env(redis_url, redis_prefix, QUEUE="sync", LOG_KEY=log.key, JOB_MS=60_000, LOCK_MS=1500)
    worker = worker_process(app, env)
    wait_until("the worker to be ready", lambda: log.entries("ready"), 30)
    [job] = produce(app, node_env(redis_url, redis_prefix, QUEUE="sync", COUNT=1))["ids"]
    wait_until("the job to start", lambda: log.entries("start"), 15)
    common: dict[str, Any] = {"redis_conn_id": "app_redis", "queues": ["sync"], "prefix": redis_prefix}
    PauseQueuesOperator(task_id="pause", migration_id="m1", **common).execute(CONTEXT)

    worker.kill()  # SIGKILL: no graceful close, the job stays in `active`
    worker.wait()
    sync = QueueRef(redis_prefix, "sync")
    wait_until(
        "the dead worker's lock to expire", lambda: not redis_client.exists(sync.key(f"{job}:lock")), 10
    )

    sensor = QueueDrainSensor(task_id="drain", drain_timeout=dt.timedelta(seconds=30), **common)
    assert sensor.poke(CONTEXT) is False
    assert sensor.last_status is not None
    [snap] = sensor.last_status.snapshots
    assert (snap.active, snap.orphaned, snap.live_workers) == (1, (job,), 0)
    report = snap.orphan_report() or ""
    assert f"active job(s) {job} have no lock key" in report and "an operator must" in report
    ResumeQueuesOperator(task_id="resume", migration_id="m1", **common).execute(CONTEXT)


def test_the_rollbacks_hold_waits_for_running_jobs_and_starts_none_until_it_resumes(
    airflow_conn: dict[str, str],
    redis_client: redis.Redis,
    redis_url: str,
    redis_prefix: str,
    worker_process: Callable[[Path, dict[str, str]], subprocess.Popen[bytes]],
) -> None:
    """The queue runs again after the deploy; a later failure's rollback pauses it, waits for the jobs the
    worker holds, swaps (here: checks and waits) and resumes: a real BullMQ 5 worker starts nothing between."""
    import logging

    from airflow_provider_expand.operators.queues import RollbackQueueHold

    app = bullmq_app(5)
    log = WorkLog(redis_client, f"{redis_prefix}:worklog")
    worker = worker_process(
        app, node_env(redis_url, redis_prefix, QUEUE="sync", LOG_KEY=log.key, JOB_MS=1000, CONCURRENCY=2)
    )
    wait_until("the worker to be ready", lambda: log.entries("ready"), 30)
    produced = produce(app, node_env(redis_url, redis_prefix, QUEUE="sync", COUNT=JOBS))
    wait_until("two jobs to start", lambda: len(log.entries("start")) >= 2, 15)
    sync = QueueRef(redis_prefix, "sync")
    config = {
        "redis_conn_id": "app_redis",
        "queues": ["sync"],
        "prefix": redis_prefix,
        "drain_timeout": dt.timedelta(seconds=30),
    }
    hold = RollbackQueueHold(
        config, migration_id="demo_migration", context=CONTEXT, log=logging.getLogger("test.hold")
    )
    seen: dict[str, Any] = {}

    def swap() -> None:  # where the old container goes back
        seen["active"] = redis_client.llen(sync.key("active"))
        seen["starts"], seen["finishes"] = log.entries("start"), log.entries("finish")
        time.sleep(2)
        seen["starts_after"] = log.entries("start")

    started = time.monotonic()
    hold.around(swap, lambda: None)
    assert time.monotonic() - started >= 2
    assert seen["active"] == 0  # the hold waited for the jobs the worker had taken
    assert sorted(seen["starts"]) == sorted(seen["finishes"])  # every started job had finished
    assert seen["starts_after"] == seen["starts"] and len(seen["starts"]) < JOBS  # none started meanwhile
    assert not redis_client.exists(sync.key("airflow-expand:paused-by"))

    wait_until("every job to finish", lambda: len(log.entries("finish")) >= JOBS, 30)
    starts = log.entries("start")
    assert sorted(starts, key=int) == sorted(produced["ids"], key=int) and len(starts) == len(set(starts))
    assert worker.poll() is None
