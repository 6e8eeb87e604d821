"""A distributed Airflow on loopback: api-server, scheduler, dag-processor, triggerer and N ``airflow celery
worker`` processes, a PostgreSQL metadata DB of its own on the test server, and a private ``redis-server`` as
the Celery broker. Used by tests/distributed and by benchmarks/celery_backfill.py.

Every process runs in a session of its own and is stopped by its pid (the api-server leaves the process
group it was started in, FACTS.md), and so is everything it forked (a task runner has a group of its own).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import sqlalchemy
from psycopg import sql

from airflow_provider_expand.demo.airflow_home import airflow_env
from airflow_provider_expand.demo.servers import free_port, with_dbname
from tests.distributed.hostnames import WORKERS

REPO = Path(__file__).resolve().parents[2]
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
TERMINAL = {"success", "failed"}
# A lost worker's task is noticed after this (default 300 s); the scheduler looks every few seconds.
HEARTBEAT_TIMEOUT = 20


@dataclass
class Worker:
    name: str  # the hostname its task instances record
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class CeleryStack:
    """The running components and a REST API v2 client (token from ``/auth/token``)."""

    url: str
    home: Path
    env: dict[str, str]
    metadata_dsn: str
    components: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    workers: dict[str, Worker] = field(default_factory=dict)
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=60))

    def authorize(self) -> None:
        token = self.client.get(f"{self.url}/auth/token").raise_for_status().json()["access_token"]
        self.client.headers["Authorization"] = f"Bearer {token}"

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """One REST call; a timeout is tried again (an api-server on a saturated machine can stall)."""
        for attempt in range(4):
            try:
                response = self.client.request(method, f"{self.url}/api/v2{path}", **kwargs)
                break
            except httpx.TimeoutException:
                if attempt == 3 or method not in ("GET", "PATCH"):
                    raise
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Un-pause and trigger as the UI does: no logical date."""
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        run = self.api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}})
        return str(run["dag_run_id"])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return list(
            self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100})[
                "task_instances"
            ]
        )

    def tries(self, dag_id: str, run_id: str, task_id: str, map_index: int) -> list[dict[str, Any]]:
        """Every try of one mapped task instance (hostname, state, start and end of each)."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/tries"
        return list(self.api("GET", path)["task_instances"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            state = self.run_state(dag_id, run_id)
            if state in TERMINAL:
                return state
            time.sleep(1)
        raise AssertionError(f"{dag_id} {run_id} did not end within {timeout:.0f} s\n{self.logs()}")

    def check_alive(self) -> None:
        for name, process in [*self.components.items(), *((w, x.process) for w, x in self.workers.items())]:
            if process.poll() is not None and name in self.expected_alive:
                raise RuntimeError(f"{name} exited with {process.returncode}\n{self.logs()}")

    @property
    def expected_alive(self) -> set[str]:
        return set(self.components) | {w for w, x in self.workers.items() if not x.process.returncode}

    def kill_worker(self, name: str) -> float:
        """SIGKILL a worker and everything it forked (its task processes): a machine lost mid-task.
        Returns the moment of the kill (``time.time()``)."""
        worker = self.workers[name]
        # the task runner may sit in a session of its own: find every descendant before the kill
        family = psutil.Process(worker.process.pid).children(recursive=True)
        os.killpg(worker.process.pid, signal.SIGKILL)
        for process in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        killed = time.time()
        worker.process.wait()
        psutil.wait_procs(family, timeout=10)
        return killed

    def logs(self, tail: int = 3000) -> str:
        """The tail of every component's and worker's log, for a failure message."""
        files = [self.home / f"{name}.log" for name in COMPONENTS] + [w.log for w in self.workers.values()]
        return "\n".join(
            f"--- {path.name}\n" + path.read_text(errors="replace")[-tail:] for path in files if path.exists()
        )

    def stop(self) -> None:
        """SIGTERM every process by pid, then SIGKILL it and whatever it forked that is still there (a task
        runner sits in a process group of its own, the api-server leaves the one it was started in)."""
        self.client.close()
        processes = list(self.components.values()) + [w.process for w in self.workers.values()]
        family: list[psutil.Process] = []
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                family += psutil.Process(process.pid).children(recursive=True)
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 20
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(deadline - time.monotonic(), 0.1))
            if process.poll() is None:
                process.kill()
            process.wait()
        for child in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        psutil.wait_procs(family, timeout=10)


def _redis_server(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A private ``redis-server`` (the Celery broker) on a free loopback port, nothing persisted."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server missing: apt-get install redis-server")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        cwd=folder,
        stdout=(folder / "redis.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    import redis

    while True:
        try:
            redis.Redis.from_url(url).ping()
            return process, url
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"redis-server did not start: {(folder / 'redis.log').read_text()}"
                ) from None
            time.sleep(0.1)


def _environment(
    home: Path, dags: Path, port: int, metadata_dsn: str, broker: str, connections: dict[str, str]
) -> dict[str, str]:
    params = psycopg.conninfo.conninfo_to_dict(metadata_dsn)
    # host and port as query parameters: a socket directory (an embedded server) works as well as an address
    alchemy = sqlalchemy.engine.URL.create(
        "postgresql+psycopg",
        username=str(params.get("user") or "postgres"),
        password=str(params["password"]) if params.get("password") else None,
        database=str(params["dbname"]),
        query={"host": str(params.get("host") or "127.0.0.1"), "port": str(params.get("port") or 5432)},
    ).render_as_string(hide_password=False)
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))},
        **airflow_env(home, dags, port=port, parallelism=16),
        **connections,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": alchemy,
        "AIRFLOW__CELERY__BROKER_URL": f"{broker}/0",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"{broker}/1",
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "3600",
        "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex,  # api-server and workers must share it
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
    }


def _wait_until(stack: CeleryStack, check: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check_alive()
        with contextlib.suppress(httpx.HTTPError, AssertionError):
            if check():
                return
        time.sleep(1)
    raise TimeoutError(f"{what} not within {timeout:.0f} s\n{stack.logs()}")


def start_worker(stack: CeleryStack, name: str, concurrency: int) -> Worker:
    """``airflow celery worker`` with its own hostname callable and log-server port, in its own session."""
    log = stack.home / f"{name}.log"
    env = {
        **stack.env,
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"tests.distributed.hostnames.{name}",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
    }
    args = [sys.executable, "-m", "airflow", "celery", "worker"]
    args += ["--celery-hostname", f"{name}@%h", "--concurrency", str(concurrency)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    worker = Worker(WORKERS[name], process, log)
    stack.workers[name] = worker
    _wait_until(stack, lambda: b" ready." in log.read_bytes(), f"celery {name}", 180)
    return worker


@contextlib.contextmanager
def celery_stack(
    pg_server_dsn: str,
    migrations: Path,
    connections: dict[str, str],
    *,
    workers: int = 2,
    concurrency: int = 2,
    dag_ids: tuple[str, ...] = (),
) -> Iterator[CeleryStack]:
    """Start everything (the DAG file builds every migration under ``migrations``); stop it all after."""
    home = Path(tempfile.mkdtemp(prefix="expand-celery-"))
    dags = home / "dags"
    dags.mkdir()
    (dags / "expand_celery.py").write_text(
        "from airflow_provider_expand.dag_factory import build_migration_dags\n"
        f"globals().update(build_migration_dags({str(migrations)!r}, strict=True))\n"
    )
    metadata_db = f"expand_celery_meta_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(metadata_db)))
    metadata_dsn = with_dbname(pg_server_dsn, metadata_db)
    broker, broker_url = _redis_server(home)
    port = free_port()
    env = _environment(home, dags, port, metadata_dsn, broker_url, connections)
    stack = CeleryStack(url=f"http://127.0.0.1:{port}", home=home, env=env, metadata_dsn=metadata_dsn)
    try:
        migrate = subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"], env=env, capture_output=True, check=False
        )
        if migrate.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed: {migrate.stderr.decode()[-3000:]}")
        for name in COMPONENTS:
            args = [sys.executable, "-m", "airflow", name] + (
                ["--port", str(port)] if name == "api-server" else []
            )
            with (home / f"{name}.log").open("wb") as out:
                stack.components[name] = subprocess.Popen(
                    args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
        for n in range(1, workers + 1):
            start_worker(stack, f"worker_{n}", concurrency)
        _wait_until(
            stack,
            lambda: stack.client.get(f"{stack.url}/api/v2/monitor/health").status_code == 200,
            "api-server health",
            240,
        )
        stack.authorize()
        _wait_until(
            stack,
            lambda: all(stack.client.get(f"{stack.url}/api/v2/dags/{d}").status_code == 200 for d in dag_ids),
            "the DAGs parsed",
            180,
        )
        yield stack
    finally:
        stack.stop()
        broker.terminate()
        broker.wait(10)
        with psycopg.connect(pg_server_dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(metadata_db))
            )
        shutil.rmtree(home, ignore_errors=True)
