"""``make ui``: Airflow 3 ``standalone`` against the demo's servers, the connections set, a known login.

Standalone runs the api-server, scheduler, dag-processor and triggerer (LocalExecutor, SQLite). It runs
in its own process group, stopped as a whole on Ctrl-C: the scheduler outlives a plain kill of its parent.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from airflow_provider_expand.demo.airflow_home import ADMIN_PASSWORD, ADMIN_USER, MIGRATION_ID


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    """Until the api-server answers its health check (it takes a while on a small machine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"airflow standalone exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(2)
    raise TimeoutError(f"the Airflow api-server at {url} did not answer within {timeout:.0f} s")


def stop_group(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            pass


def run_standalone(env: dict[str, str], port: int, log: logging.Logger) -> int:
    """Start standalone, print where to log in, and wait until it ends or Ctrl-C."""
    url = f"http://127.0.0.1:{port}"
    # standalone starts its components as `airflow ...` from PATH: make it the venv's, activated or not
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    process = subprocess.Popen(
        [sys.executable, "-m", "airflow", "standalone"],
        env={**os.environ, **env, "PATH": path},
        start_new_session=True,
    )

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM too stops Airflow's whole process group, not just this process

    signal.signal(signal.SIGTERM, terminate)
    try:
        wait_healthy(url, process)
        print("\n" + "=" * 78)
        print(f"Airflow UI: {url}   login: {ADMIN_USER} / {ADMIN_PASSWORD}")
        print(f"Open DAG '{MIGRATION_ID}', press Trigger, set the params, and watch the tasks run.")
        print("Mark 'soak' failed while it waits to abort the migration and roll back. Ctrl-C stops Airflow.")
        print("=" * 78 + "\n", flush=True)
        return process.wait()
    except KeyboardInterrupt:
        log.info("Stopping Airflow")
        return 0
    finally:
        stop_group(process)
