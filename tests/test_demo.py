"""``make demo`` as a newcomer runs it: embedded PostgreSQL and Redis, seed, the example migration end to
end, the ledger's summary — twice in a row (the second run re-seeds and completes again)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _demo(state: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "EXPAND_DEMO_"))}
    args = ["run", "--rows", "3000", "--soak", "2s", "--state", str(state)]
    return subprocess.run(
        [sys.executable, "-m", "airflow_provider_expand.demo", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )


def test_demo_runs_end_to_end_twice_on_embedded_servers() -> None:
    # not under pytest's basetemp: pgserver adjusts the permissions of the data directory's parents
    state = Path(tempfile.mkdtemp(prefix="expand-demo-test-"))
    try:
        for attempt in (1, 2):
            result = _demo(state)
            out = result.stdout + result.stderr
            assert result.returncode == 0, f"run {attempt}:\n{out[-4000:]}"
            assert "Starting an embedded PostgreSQL" in out and "embedded Redis" in out, out[-2000:]
            assert "Seeded 20 shops and 3000 products" in out, out[-2000:]
            assert "Seeded BullMQ queue bull:sync with 25 waiting jobs" in out
            assert re.search(r"DAG run \S+: success in \d+ s", out), out[-3000:]
            assert "migration products_title_to_name: phase completed" in out
            # progress from the backfill task's own log, then its row in the ledger's summary
            assert re.search(r"backfill:products: done, [\d,]+ rows", out), out[-3000:]
            assert re.search(r"backfill:products\s+success\s+[\d,]+ / [\d,]+\s+[\d.]+ s", out), out[-3000:]
            assert re.search(r"the app meanwhile: \d+ updates, 0 errors", out), out[-1000:]
    finally:
        shutil.rmtree(state, ignore_errors=True)
