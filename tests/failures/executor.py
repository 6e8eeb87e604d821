"""Runs a DAG through a real executor, for the cells that SIGKILL a task's process.

``dag.test()`` runs tasks inside the test's process; ``dag.test(use_executor=True)`` hands them to the
LocalExecutor instead, whose supervisor forks each task and talks to the Execution API. That API is an
``airflow api-server`` on a free port sharing this session's SQLite metadata DB and JWT secret: then a
killed task process is reported failed by its supervisor and retried like on a real worker.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from tests.ports import free_port as _free_port

STARTUP_TIMEOUT = 120.0


@contextmanager
def execution_api(airflow_home: Path) -> Iterator[dict[str, str]]:
    """An api-server for the LocalExecutor's task supervisors; yields the Airflow settings (environment
    variables) that point this process's executor at it, for the tests that use it to set."""
    port = _free_port()
    settings = {
        "AIRFLOW__API_AUTH__JWT_SECRET": os.environ.get("AIRFLOW__API_AUTH__JWT_SECRET")
        or secrets.token_hex(32),  # 64 bytes: the HS512 minimum
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",
    }
    log = (airflow_home / f"api-server-{port}.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "airflow", "api-server", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, **settings},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_healthy(port, server)
        yield settings
    finally:
        # the api-server's workers may leave its group: stop the group, then the process itself
        for target in (lambda: os.killpg(server.pid, signal.SIGTERM), server.terminate):
            with suppress(ProcessLookupError):
                target()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


def _wait_healthy(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    url = f"http://127.0.0.1:{port}/api/v2/monitor/health"
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the api-server exited with {server.returncode} before it answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the api-server did not answer on {url} within {STARTUP_TIMEOUT:.0f} s")


def run_with_executor(dag_file: Path, dag_id: str) -> Any:
    """``dag.test(use_executor=True)``: each task in a process of its own, supervised, retried when lost."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(dag_file))
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag(dag_id)
    assert dag is not None, f"{dag_id} not in {list(bag.dags)}"
    return dag.test(logical_date=None, use_executor=True)
