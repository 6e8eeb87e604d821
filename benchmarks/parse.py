"""How long Airflow takes to parse a dags folder of migrations: the factory must stay cheap at parse time.

Generates N copies of the example migration (distinct ids), then times, in one process:
(a) ``build_migration_dags`` on the folder, (b) a full ``DagBag`` parse of a DAG file that builds them,
as the dag-processor does. Reports the median of ``--repeat`` runs and the time per migration.

    .venv/bin/python benchmarks/parse.py --migrations 50 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "dags" / "migrations" / "products_title_to_name"


def generate(root: Path, count: int) -> Path:
    migrations = root / "migrations"
    for i in range(count):
        folder = migrations / f"m{i:03d}"
        shutil.copytree(EXAMPLE, folder)
        spec = folder / "migration.yaml"
        spec.write_text(spec.read_text().replace("id: products_title_to_name", f"id: bench_{i:03d}"))
    return migrations


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--migrations", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="expand-parse-bench-"))
    os.environ.setdefault("AIRFLOW_HOME", str(root / "airflow"))
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    migrations = generate(root, args.migrations)
    dag_file = root / "dags" / "expand_contract.py"
    dag_file.parent.mkdir()
    dag_file.write_text(
        "from airflow_provider_expand.dag_factory import build_migration_dags\n"
        f"globals().update(build_migration_dags({str(migrations)!r}, strict=True))\n"
    )

    from airflow.dag_processing.dagbag import DagBag

    from airflow_provider_expand.dag_factory import build_migration_dags

    build_migration_dags(migrations, strict=True)  # warm imports once; parse time is what repeats
    factory, dagbag = [], []
    for _ in range(args.repeat):
        started = time.perf_counter()
        dags = build_migration_dags(migrations, strict=True)
        factory.append(time.perf_counter() - started)
        started = time.perf_counter()
        bag = DagBag(dag_folder=str(dag_file))
        dagbag.append(time.perf_counter() - started)
        assert not bag.import_errors, bag.import_errors
        assert len(bag.dags) == len(dags) == args.migrations
    shutil.rmtree(root, ignore_errors=True)

    n = args.migrations
    print(f"| what ({n} migrations, median of {args.repeat}) | total | per migration |")
    print("|---|---:|---:|")
    for label, samples in (
        ("build_migration_dags(folder)", factory),
        ("DagBag parse of the DAG file", dagbag),
    ):
        median = statistics.median(samples)
        print(f"| {label} | {median * 1000:.0f} ms | {median * 1000 / n:.1f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
