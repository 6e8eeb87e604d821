"""The queues through a real ``dag.test()``. In the deploy variant a deploy that fails its health check must
not let the workers take jobs until the old container is back and rollback.sql has run; a run that fails
before expand (the drain times out) still resumes what it paused, and never a queue a person paused.

In the deploy test a thread samples the queue's ``meta.paused`` (Redis) and the container's image (Docker) every few ms for
the whole run; the ledger's step times mark the deploy's failure, the container back and rollback.sql done.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import pytest
import redis
from docker import APIClient

from airflow_provider_expand.engine.ledger.store import Ledger
from tests.dags.harness import copy_migration, install_dag_file, run_dag, seed_bullmq_queue, seed_demo, states
from tests.deploy.images import DOCKER_URL, AppContainer, AppImages, app_container, app_images, docker_api

__all__ = ["app_container", "app_images", "docker_api"]


@dataclass
class Sample:
    at: float
    paused: bool  # meta.paused both before and after the Docker read
    image: str | None  # None while no container carries the name (mid-swap) or it is not running


@dataclass
class Observer:
    """Samples Redis and Docker until stopped."""

    redis_url: str
    docker_url: str
    meta_key: str
    container: str
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Observer:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=30)

    def _image(self, client: APIClient) -> str | None:
        try:
            info = client.inspect_container(self.container)
        except Exception:
            return None
        return str(info["Config"]["Image"]) if info["State"]["Running"] else None

    def _run(self) -> None:
        r = redis.Redis.from_url(self.redis_url)
        client = APIClient(base_url=self.docker_url, version="auto", timeout=30)
        try:
            while not self._stop.is_set():
                before = bool(r.hexists(self.meta_key, "paused"))
                image = self._image(client)
                after = bool(r.hexists(self.meta_key, "paused"))
                self.samples.append(Sample(time.time(), before and after, image))
                time.sleep(0.005)
        finally:
            r.close()
            client.close()


def _epoch(value: dt.datetime | None) -> float:
    assert value is not None
    return value.timestamp()


def _deploy_migration(
    tmp: Path, app: AppContainer, images: AppImages, prefix: str, with_rollback_sql: bool
) -> tuple[Path, str]:
    """The example with the queue and a deploy of v3, whose health check fails."""
    migration_id = f"deploy_queues_{uuid.uuid4().hex[:8]}"
    folder = copy_migration(
        tmp,
        migration_id,
        redis_conn_id="app_redis",
        queues={"names": ["sync"], "prefix": prefix, "drain_timeout": "5s"},
        soak="1s",
        rollback="rollback.sql" if with_rollback_sql else None,
        deploy={
            "container": app.name,
            "image": images.v3,
            "health_url": f"{app.url}/health/ready",
            "health_timeout": "3s",
            "watch": "2s",
            "docker_url": DOCKER_URL,
        },
    )
    return folder, migration_id


@pytest.mark.parametrize("with_rollback_sql", [True, False], ids=["rollback_sql", "container_only"])
def test_failed_deploy_keeps_the_queues_paused_until_the_old_code_runs_again(
    tmp_path: Path,
    airflow_home: Path,
    airflow_conn: dict[str, str],
    pg_conn: psycopg.Connection,
    redis_client: redis.Redis,
    redis_url: str,
    redis_prefix: str,
    docker_api: APIClient,
    app_images: AppImages,
    app_container: AppContainer,
    with_rollback_sql: bool,
) -> None:
    seed_demo(pg_conn, 2000)
    seed_bullmq_queue(redis_client, redis_prefix)
    meta_key = f"{redis_prefix}:sync:meta"
    folder, migration_id = _deploy_migration(
        tmp_path, app_container, app_images, redis_prefix, with_rollback_sql
    )
    dag_file = install_dag_file(airflow_home, folder.parent, migration_id)
    observer = Observer(redis_url, DOCKER_URL, meta_key, app_container.name).start()
    try:
        run = run_dag(dag_file, migration_id)
    finally:
        observer.stop()

    got = states(run)
    assert str(run.state) == "failed", got
    assert got["deploy"] == "failed" and got["rollback"] == "success", got
    assert got["queues.resume"] == "success", got
    ledger = Ledger()
    steps = {s.step: s for s in ledger.steps(pg_conn, migration_id)}
    failed_at = _epoch(steps["deploy"].finished_at)
    back_at = _epoch(steps["rollback:deploy"].finished_at)
    done_at = _epoch(steps["rollback"].finished_at) if with_rollback_sql else back_at
    record = ledger.get(pg_conn, migration_id)
    assert record is not None and record.phase == ("rolled_back" if with_rollback_sql else "failed")

    samples = observer.samples
    window = [s for s in samples if failed_at <= s.at <= done_at]
    # the observer saw the rollback happen: samples all through it, the new image and then the old one
    assert len(window) >= 5, (len(samples), failed_at, done_at)
    assert any(s.image == app_images.v3 for s in window), {s.image for s in window}
    assert any(s.image == app_images.v1 and s.at >= back_at - 0.5 for s in samples)
    unpaused = [s for s in window if not s.paused]
    assert not unpaused, f"queue un-paused during the rollback at {[(s.at, s.image) for s in unpaused[:5]]}"
    # at no moment is the queue running while the container is not the old code, healthy
    wrong = [s for s in samples if not s.paused and s.image != app_images.v1]
    assert not wrong, [(s.at, s.image) for s in wrong[:5]]
    assert any(s.image == app_images.v3 for s in samples)  # the new code did run meanwhile
    # the new code ran only while the queue was paused; the queue is running again at the end, ours no more
    assert not redis_client.hexists(meta_key, "paused")
    assert not redis_client.exists(f"{redis_prefix}:sync:airflow-expand:paused-by")
    assert redis_client.llen(f"{redis_prefix}:sync:wait") == 3
    resumed_at = min(s.at for s in samples if s.at > failed_at and not s.paused)
    assert resumed_at >= done_at
    print(
        f"samples={len(samples)} in-window={len(window)} failure->container back {back_at - failed_at:.2f}s"
        f" ->rollback done {done_at - back_at:.2f}s ->resumed {resumed_at - done_at:.3f}s"
    )


def test_drain_timeout_fails_the_run_and_the_teardown_resumes_only_what_it_paused(
    tmp_path: Path,
    airflow_home: Path,
    airflow_conn: dict[str, str],
    pg_conn: psycopg.Connection,
    redis_client: redis.Redis,
    redis_prefix: str,
) -> None:
    seed_demo(pg_conn, 200)
    seed_bullmq_queue(redis_client, redis_prefix, "sync")
    seed_bullmq_queue(redis_client, redis_prefix, "mail")
    redis_client.hset(f"{redis_prefix}:mail:meta", "paused", 1)  # a person paused it before the run
    redis_client.rename(f"{redis_prefix}:mail:wait", f"{redis_prefix}:mail:paused")
    redis_client.rpush(f"{redis_prefix}:sync:active", "9")  # a job that will not finish within the drain
    redis_client.set(f"{redis_prefix}:sync:9:lock", "token", px=120_000)
    migration_id = f"drain_timeout_{uuid.uuid4().hex[:8]}"
    folder = copy_migration(
        tmp_path,
        migration_id,
        redis_conn_id="app_redis",
        queues={"names": ["sync", "mail"], "prefix": redis_prefix, "drain_timeout": "2s"},
    )
    run = run_dag(install_dag_file(airflow_home, folder.parent, migration_id), migration_id)

    got = states(run)
    assert str(run.state) == "failed", got
    assert got["queues.drain"] == "failed" and got["expand"] == "upstream_failed", got
    assert got["rollback"] == "skipped" and got["queues.resume"] == "success", got
    assert not redis_client.hexists(f"{redis_prefix}:sync:meta", "paused")
    assert redis_client.llen(f"{redis_prefix}:sync:wait") == 3
    assert not redis_client.exists(f"{redis_prefix}:sync:airflow-expand:paused-by")
    assert redis_client.hget(f"{redis_prefix}:mail:meta", "paused") == b"1"  # the person's pause holds
    assert redis_client.llen(f"{redis_prefix}:mail:paused") == 3


def test_the_rollback_gets_the_queues_only_with_a_deploy(tmp_path: Path) -> None:
    """Built without any server: who holds the queues, and what queues.resume asks the ledger."""
    from airflow_provider_expand.dag_factory import build_migration_dag

    deploy = {"container": "backend-worker", "image": "app/w:2", "health_url": "http://localhost:65000/ready"}
    with_deploy = build_migration_dag(copy_migration(tmp_path / "a", "with_deploy", deploy=deploy))
    rollback = with_deploy.get_task("rollback")
    assert rollback.queue_hold is not None  # type: ignore[attr-defined]
    assert rollback.queue_hold["queues"] == ["sync"] and rollback.queue_hold["prefix"] == "bull"  # type: ignore[attr-defined]
    assert rollback.queue_hold["drain_timeout"] == dt.timedelta(minutes=30)  # type: ignore[attr-defined]
    resume = with_deploy.get_task("queues.resume")
    assert resume.postgres_conn_id == "app_db" and resume.is_teardown  # type: ignore[attr-defined]
    assert "deploy" in resume.upstream_task_ids and "rollback" not in resume.upstream_task_ids

    container_only = build_migration_dag(
        copy_migration(tmp_path / "b", "container_only", deploy=deploy, rollback=None)
    )
    assert container_only.get_task("rollback").queue_hold is not None  # type: ignore[attr-defined]

    without = build_migration_dag(copy_migration(tmp_path / "c", "without_deploy"))
    assert without.get_task("rollback").queue_hold is None  # type: ignore[attr-defined]


class _SlowAdmin(BaseHTTPRequestHandler):
    """The app's admin endpoint: /pause hangs past the task's timeout, /resume answers at once."""

    calls: list[str] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).calls.append(self.path)
        if self.path == "/pause":
            time.sleep(4)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_pause_that_dies_midway_is_undone_by_the_teardown(
    tmp_path: Path,
    airflow_home: Path,
    airflow_conn: dict[str, str],
    pg_conn: psycopg.Connection,
    redis_client: redis.Redis,
    redis_prefix: str,
) -> None:
    """The pause task is cut off by its execution_timeout (a BaseException: the pause's own undo never runs)
    after pausing the queue, while the app's pause endpoint hangs: the queue carries this run's marker, and
    the teardown, which runs although its setup failed, resumes the queue and the app."""
    from airflow.dag_processing.dagbag import DagBag

    seed_demo(pg_conn, 200)
    seed_bullmq_queue(redis_client, redis_prefix, "sync")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowAdmin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    _SlowAdmin.calls = []
    migration_id = f"pause_dies_{uuid.uuid4().hex[:8]}"
    folder = copy_migration(
        tmp_path,
        migration_id,
        redis_conn_id="app_redis",
        queues={
            "names": ["sync"],
            "prefix": redis_prefix,
            "pause_url": f"{url}/pause",
            "resume_url": f"{url}/resume",
        },
    )
    bag = DagBag(dag_folder=str(install_dag_file(airflow_home, folder.parent, migration_id)))
    dag = bag.get_dag(migration_id)
    assert dag is not None, bag.import_errors
    dag.get_task("queues.pause").execution_timeout = dt.timedelta(seconds=1)
    try:
        run = dag.test(logical_date=None)
    finally:
        server.shutdown()
        server.server_close()

    got = states(run)
    assert got["queues.pause"] == "failed" and got["queues.drain"] == "upstream_failed", got
    assert got["queues.resume"] == "success", got
    assert not redis_client.hexists(f"{redis_prefix}:sync:meta", "paused")
    assert not redis_client.exists(f"{redis_prefix}:sync:airflow-expand:paused-by")
    assert redis_client.llen(f"{redis_prefix}:sync:wait") == 3
    assert _SlowAdmin.calls == ["/pause", "/resume"]  # the app is told to resume too


def test_a_failing_rollback_sql_still_resumes_the_queues_once_the_old_container_is_back(
    tmp_path: Path,
    airflow_home: Path,
    airflow_conn: dict[str, str],
    pg_conn: psycopg.Connection,
    redis_client: redis.Redis,
    redis_url: str,
    redis_prefix: str,
    docker_api: APIClient,
    app_images: AppImages,
    app_container: AppContainer,
) -> None:
    seed_demo(pg_conn, 500)
    seed_bullmq_queue(redis_client, redis_prefix)
    meta_key = f"{redis_prefix}:sync:meta"
    folder, migration_id = _deploy_migration(tmp_path, app_container, app_images, redis_prefix, True)
    with (folder / "rollback.sql").open("a") as sql:
        sql.write(  # passes lint (allowed), fails when it runs
            "\n-- expand: allow EX104 because the test injects a failing statement\n"
            "ALTER TABLE no_such_table DROP COLUMN IF EXISTS name;\n"
        )
    dag_file = install_dag_file(airflow_home, folder.parent, migration_id)
    observer = Observer(redis_url, DOCKER_URL, meta_key, app_container.name).start()
    try:
        run = run_dag(dag_file, migration_id)
    finally:
        observer.stop()

    got = states(run)
    assert got["deploy"] == "failed" and got["rollback"] == "failed", got
    info = docker_api.inspect_container(app_container.name)
    assert info["Config"]["Image"] == app_images.v1 and info["State"]["Running"]
    wrong = [s for s in observer.samples if not s.paused and s.image != app_images.v1]
    assert not wrong, [(s.at, s.image) for s in wrong[:5]]
    assert not redis_client.hexists(meta_key, "paused")  # resumed: the old code works on this schema
    assert not redis_client.exists(f"{redis_prefix}:sync:airflow-expand:paused-by")
