"""One real Airflow for the tests in this folder: api-server, scheduler, dag-processor and triggerer as
separate processes on localhost (LocalExecutor, SQLite metadata DB in a temporary home), not dag.test().

Copies of the example migration are in its dags folder, each on a database of its own so their runs may
overlap: ``products_title_to_name`` as shipped (soak shortened), ``products_title_to_name_rollback`` with a
failing ``after: expand`` check injected, and ``products_title_to_name_ui`` for the browser test.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
import yaml
from aiosmtpd.controller import Controller
from psycopg import sql

from airflow_provider_expand.demo.airflow_home import airflow_env, connection_env
from airflow_provider_expand.demo.servers import free_port, with_dbname
from tests.dags.harness import Inbox, copy_migration, seed_bullmq_queue, seed_demo

MIGRATION = "products_title_to_name"
ROLLBACK = "products_title_to_name_rollback"
BROWSER = "products_title_to_name_ui"  # the browser test's own copy: its run must not queue behind the others
# the migration view's copy: a slow backfill (small batches, long pauses, two partitions) to watch move
VIEW = "products_title_to_name_view"
VIEW_BACKFILL = {"batch_size": 10, "pause": "2s", "partitions": 2}
# after its soak a person is asked (HITL) whether to contract; no answer within this is a "wait"
VIEW_APPROVAL = {"approvers": ["admin"], "timeout": "20s"}
# the contract approval's copy where a person chooses to roll back
APPROVAL = "products_title_to_name_approval"
DEADLINE = "15s"
ROWS = 3_000
# long enough that the soak is still running when it starts (it counts from expand), even on a busy machine
SOAK = "60s"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
# a real login (simple auth manager users, not all-admins mode, which would authorise every request)
USER = "admin"
PASSWORD = uuid.uuid4().hex
TERMINAL = {"success", "failed"}


@dataclass
class LiveAirflow:
    """A running Airflow and a REST API v2 client for it (token from ``/auth/token``)."""

    url: str
    home: Path
    processes: list[subprocess.Popen[bytes]]
    dsns: dict[str, str]
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))
    inbox: Inbox = field(default_factory=Inbox)  # what the notifiers mailed (a real SMTP server on loopback)

    def login(self, username: str = USER, password: str = PASSWORD) -> str:
        """An Airflow access token for ``username``, as the login form gets it."""
        response = httpx.post(
            f"{self.url}/auth/token", json={"username": username, "password": password}, timeout=30
        )
        return str(response.raise_for_status().json()["access_token"])

    def authorize(self) -> None:
        self.client.headers["Authorization"] = f"Bearer {self.login()}"

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.client.request(method, f"{self.url}/api/v2{path}", **kwargs)
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        """Un-pause and trigger as the UI does: no logical date, the params form's values as conf."""
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        run = self.api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
        return str(run["dag_run_id"])

    def hitl(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any] | None:
        """The task's Human-in-the-loop detail, or None while it has none."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails"
        response = self.client.get(f"{self.url}{path}")
        return dict(response.json()) if response.status_code == 200 else None

    def awaiting_input(self, dag_id: str, run_id: str, task_id: str) -> bool:
        """The task is parked for a person, with its question unanswered."""
        ti = self.client.get(f"{self.url}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
        detail = self.hitl(dag_id, run_id, task_id)
        return (
            ti.status_code == 200
            and ti.json()["state"] == "awaiting_input"
            and detail is not None
            and not detail.get("response_received")
        )

    def answer(self, dag_id: str, run_id: str, task_id: str, choice: str) -> dict[str, Any]:
        """Answer it as the UI's Required Actions does, as a person would: not within seconds of the task
        parking (Airflow 3.3.2 with the LocalExecutor: an answer before the parked process's exit event,
        some 6 s later, is lost to a retry, which asks again)."""
        time.sleep(12)
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails"
        return dict(self.api("PATCH", path, json={"chosen_options": [choice], "params_input": {}}))

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return list(self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"])

    def watch(self, dag_id: str, run_id: str, timeout: float = 420.0) -> tuple[str, dict[str, list[str]]]:
        """Poll the run until it ends; returns its state and every state seen for each task, in order
        (plus ``in_triggerer`` when a deferred task was held by a triggerer job)."""
        seen: dict[str, list[str]] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ti in self.task_instances(dag_id, run_id):
                states = seen.setdefault(ti["task_id"], [])
                state = str(ti["state"])
                if state == "deferred" and ti.get("triggerer_job"):
                    state = "deferred:in_triggerer"
                if not states or states[-1] != state:
                    states.append(state)
            run_state = str(self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"])
            if run_state in TERMINAL:
                return run_state, seen
            time.sleep(1)
        raise AssertionError(
            f"{dag_id} {run_id} did not end within {timeout:.0f} s; states {seen}; {self.logs()}"
        )

    def logs(self) -> str:
        """The tail of every component's log, for a failure message."""
        return "\n".join(
            f"--- {name}\n" + (self.home / f"{name}.log").read_text(errors="replace")[-3000:]
            for name in COMPONENTS
        )


def _wait_until(check: Any, what: str, timeout: float, live: LiveAirflow) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in live.processes:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args} exited with {process.returncode}\n{live.logs()}")
        try:
            if check():
                return
        except (httpx.HTTPError, AssertionError):
            pass
        time.sleep(2)
    raise TimeoutError(f"{what} not within {timeout:.0f} s\n{live.logs()}")


def _stop(processes: list[subprocess.Popen[bytes]], grace: float = 15.0) -> None:
    """SIGTERM every component's process group at once, then SIGKILL the groups still there."""
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(max(deadline - time.monotonic(), 0.1))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # what the component forked may outlive it
        process.wait()


def _override_backfill(folder: Path, values: dict[str, Any]) -> None:
    spec_file = folder / "migration.yaml"
    spec = yaml.safe_load(spec_file.read_text())
    spec["backfill"] = [{**fill, **values} for fill in spec["backfill"]]
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))


def _start(home: Path, dsns: dict[str, str], redis_url: str, prefix: str, smtp_port: int) -> LiveAirflow:
    """Migration copies, a DAG file, the metadata DB, then the four components, each in its own group."""
    queues = {"names": ["sync"], "prefix": prefix, "drain_timeout": "60s"}
    copy_migration(home, MIGRATION, soak=SOAK, queues=queues)
    failing = {"name": "injected failure", "sql": "SELECT 1", "expect": 2, "after": "expand"}
    copy_migration(home, ROLLBACK, soak=SOAK, queues=queues, verify=[failing], postgres_conn_id="app_db_rb")
    copy_migration(home, BROWSER, soak=SOAK, queues=queues, postgres_conn_id="app_db_ui")
    view = copy_migration(
        home, VIEW, soak=SOAK, queues=queues, postgres_conn_id="app_db_view", contract_approval=VIEW_APPROVAL
    )
    copy_migration(
        home,
        APPROVAL,
        soak="5s",
        queues=queues,
        postgres_conn_id="app_db_ap",
        contract_approval={"timeout": "10m"},
        # a Deadline Alert: the run waits for a person far longer than this
        notify={
            "smtp": {"to": ["oncall@example.com"], "conn_id": "smtp_live"},
            "events": ["rollback"],
            "deadline": DEADLINE,
        },
    )
    _override_backfill(view, VIEW_BACKFILL)
    dags = home / "dags"
    dags.mkdir()
    (dags / "expand_live.py").write_text(
        "from airflow_provider_expand.dag_factory import build_migration_dags\n"
        f"globals().update(build_migration_dags({str(home / 'migrations')!r}, strict=True))\n"
    )
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({USER: PASSWORD}))
    passwords.chmod(0o600)
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))},
        **airflow_env(home, dags, port=port, parallelism=4),
        **connection_env(dsns[MIGRATION], redis_url),
        **connection_env(dsns[ROLLBACK], redis_url, pg_conn_id="app_db_rb"),
        **connection_env(dsns[BROWSER], redis_url, pg_conn_id="app_db_ui"),
        **connection_env(dsns[VIEW], redis_url, pg_conn_id="app_db_view"),
        **connection_env(dsns[APPROVAL], redis_url, pg_conn_id="app_db_ap"),
        "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "3",
        "AIRFLOW_CONN_SMTP_LIVE": json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": smtp_port,
                "extra": {"disable_ssl": True, "disable_tls": True, "retry_limit": 0, "timeout": 10},
            }
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        # the migration view reads the specs the DAG file loads
        "AIRFLOW__EXPAND__MIGRATIONS_FOLDER": str(home / "migrations"),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
    }
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True
    )
    live = LiveAirflow(url=f"http://127.0.0.1:{port}", home=home, processes=[], dsns=dsns)
    for name in COMPONENTS:
        args = [sys.executable, "-m", "airflow", name] + (
            ["--port", str(port)] if name == "api-server" else []
        )
        with (home / f"{name}.log").open("wb") as out:
            live.processes.append(
                subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            )
    return live


CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def page(live_airflow: LiveAirflow) -> Iterator[object]:
    """Debian's chromium through Playwright (never a downloaded browser), logged in to Airflow: the token
    the login form would get, in the cookie the UI and the API read."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} missing: apt-get install chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            context.add_cookies([{"name": "_token", "value": live_airflow.login(), "url": live_airflow.url}])
            yield context.new_page()
        finally:
            browser.close()


@pytest.fixture(scope="session")
def live_airflow(pg_server_dsn: str, redis_url: str) -> Iterator[LiveAirflow]:
    home = Path(tempfile.mkdtemp(prefix="expand-live-airflow-"))
    prefix = f"expandlive{uuid.uuid4().hex[:10]}"
    databases = {
        dag_id: f"expand_live_{uuid.uuid4().hex[:10]}"
        for dag_id in (MIGRATION, ROLLBACK, BROWSER, VIEW, APPROVAL)
    }
    dsns = {dag_id: with_dbname(pg_server_dsn, name) for dag_id, name in databases.items()}
    client = redis.Redis.from_url(redis_url)
    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=free_port())
    live: LiveAirflow | None = None
    try:
        with psycopg.connect(pg_server_dsn, autocommit=True) as admin:
            for name in databases.values():
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        for dsn in dsns.values():
            with psycopg.connect(dsn, autocommit=True) as conn:
                seed_demo(conn, ROWS)
        seed_bullmq_queue(client, prefix)
        smtp.start()
        live = _start(home, dsns, redis_url, prefix, smtp.port)
        live.inbox = inbox
        _wait_until(
            lambda: live.client.get(f"{live.url}/api/v2/monitor/health").status_code == 200,
            "api-server health",
            240,
            live,
        )
        live.authorize()
        _wait_until(
            lambda: all(live.client.get(f"{live.url}/api/v2/dags/{d}").status_code == 200 for d in databases),
            "the DAGs parsed",
            180,
            live,
        )
        yield live
    finally:
        if live is not None:
            live.client.close()
            _stop(live.processes)
        with contextlib.suppress(AssertionError, RuntimeError):
            smtp.stop()
        with psycopg.connect(pg_server_dsn, autocommit=True) as admin:
            for name in databases.values():
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)
        client.close()
