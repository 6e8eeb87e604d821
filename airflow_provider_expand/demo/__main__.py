"""``python -m airflow_provider_expand.demo run|ui`` (what ``make demo`` and ``make ui`` call)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from airflow_provider_expand.demo.run import prepare_airflow, run_migration, seed
from airflow_provider_expand.demo.servers import demo_servers
from airflow_provider_expand.demo.ui import run_standalone

log = logging.getLogger("expand-demo")


def _repo() -> Path:
    """The checkout the demo reads the example migration and the shop schema from."""
    for candidate in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (candidate / "dags" / "migrations").is_dir():
            return candidate
    raise SystemExit("run the demo from the repository's checkout (no dags/migrations here)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m airflow_provider_expand.demo", description=__doc__)
    parser.add_argument(
        "command", choices=["run", "ui"], help="run: the migration end to end; ui: Airflow UI"
    )
    parser.add_argument("--rows", type=int, default=int(os.environ.get("EXPAND_DEMO_ROWS", "500000")))
    parser.add_argument("--soak", default=os.environ.get("EXPAND_DEMO_SOAK", "20s"), help="instead of 24h")
    parser.add_argument("--port", type=int, default=int(os.environ.get("EXPAND_DEMO_PORT", "8080")))
    parser.add_argument("--state", type=Path, default=None, help="state directory (default: <repo>/.demo)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    repo = _repo()
    state: Path = (args.state or repo / ".demo").resolve()
    state.mkdir(parents=True, exist_ok=True)
    with demo_servers(state, log) as servers:
        seed(servers, repo, args.rows, log)
        env = prepare_airflow(servers, repo, state, soak=args.soak, port=args.port)
        if args.command == "ui":
            return run_standalone(env, args.port, log)
        return 0 if run_migration(servers, Path(env["AIRFLOW__CORE__DAGS_FOLDER"]), args.rows, log) else 1


if __name__ == "__main__":
    sys.exit(main())
