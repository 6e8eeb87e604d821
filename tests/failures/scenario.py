"""One cell of the fault matrix: the example migration on a small table, the application writing, queues on
real Redis, a fault injected, then runs of the DAG each followed by the invariant checker.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis
import yaml

from tests.dags.harness import Writer, copy_migration, install_dag_file, run_dag, seed_bullmq_queue, states
from tests.failures.invariants import Verdict, check_invariants
from tests.failures.matrix import Cell, RunRecord

ROWS = 8_000
# Every task retries transient failures (Airflow's retry policy from these spec keys), quickly in tests.
RETRIES: dict[str, Any] = {"retries": 2, "retry_delay": "1s"}
BACKFILL = {
    "table": "products",
    "set": "name = title, price_cents = round(price * 100)::bigint",
    "where": "name IS NULL OR (price_cents IS NULL AND price IS NOT NULL)",
    "batch_size": 500,  # 16 batches: a backfill that runs long enough to be hit mid-step
    "target_batch_time": "100ms",
    "pause": "100ms",
    "partitions": 1,
}


@dataclass
class Env:
    """What a cell needs from the fixtures: its database, Redis, Airflow home and the reference schemas."""

    tmp: Path
    home: Path
    dsn: str
    conn: psycopg.Connection
    redis: redis.Redis
    prefix: str
    shops: list[uuid.UUID]
    references: dict[str, str]


@dataclass
class Scenario:
    """A copy of the example migration for one cell; ``run`` triggers it and checks the invariants."""

    env: Env
    cell: Cell
    overrides: dict[str, Any] = field(default_factory=dict)
    queues: bool = True
    folder: Path = field(init=False)
    dag_file: Path = field(init=False)
    migration_id: str = field(init=False)
    expected: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.migration_id = f"fm_{self.cell.slug}_{uuid.uuid4().hex[:6]}"
        spec: dict[str, Any] = {"soak": "1s", "backfill": [dict(BACKFILL)], **RETRIES}
        if self.queues:
            seed_bullmq_queue(self.env.redis, self.env.prefix)
            spec["queues"] = {"names": ["sync"], "prefix": self.env.prefix, "drain_timeout": "30s"}
        else:
            spec["queues"] = None
        spec.update(self.overrides)
        self.folder = copy_migration(self.env.tmp, self.migration_id, **spec)
        self.dag_file = install_dag_file(self.env.home, self.folder.parent, self.migration_id)
        self._originals: dict[str, str] = {}

    # -- injecting and fixing faults in the migration's files ---------------------------------------

    def edit(self, file: str, change: Callable[[str], str]) -> None:
        """Change one file of the migration (a fault); ``fix`` puts every changed file back."""
        path = self.folder / file
        text = path.read_text()
        self._originals.setdefault(file, text)
        path.write_text(change(text))

    def edit_spec(self, change: Callable[[dict[str, Any]], None]) -> None:
        def apply(text: str) -> str:
            spec = yaml.safe_load(text)
            change(spec)
            return yaml.safe_dump(spec, sort_keys=False)

        self.edit("migration.yaml", apply)

    def fix(self) -> None:
        for file, text in self._originals.items():
            (self.folder / file).write_text(text)
        self._originals.clear()

    # -- runs -------------------------------------------------------------------------------------

    def run(
        self,
        label: str,
        *,
        fault: Callable[[], Any] | None = None,
        expect_shape: Iterable[str] | None = None,
        conf: dict[str, Any] | None = None,
        runner: Callable[[Path, str], Any] | None = None,
    ) -> tuple[RunRecord, Verdict]:
        """Trigger the DAG once with the app writing (``fault`` started first, stopped after), then check."""
        writer = Writer(self.env.dsn, self.env.shops, ROWS, expected=self.expected, tag=f"{label}-").start()
        injected = fault() if fault is not None else None
        started = time.perf_counter()
        try:
            dag_run = (runner or (lambda f, i: run_dag(f, i, conf)))(self.dag_file, self.migration_id)
        finally:
            seconds = time.perf_counter() - started
            if injected is not None:
                injected.stop()
            writer.stop()
        result = states(dag_run)
        tries = {
            (ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"): int(ti.try_number)
            for ti in dag_run.get_task_instances()
        }
        verdict = check_invariants(
            self.env.dsn,
            self.env.references,
            self.migration_id,
            writer,
            self.env.redis if self.queues else None,
            self.env.prefix if self.queues else None,
            expect_shape=expect_shape,
        )
        record = RunRecord(
            label=label,
            state=str(dag_run.state),
            failed=sorted(t for t, s in result.items() if s == "failed"),
            rollback=result.get("rollback", "-"),
            seconds=seconds,
            verdict=verdict.summary(),
            fault=injected.describe() if injected is not None and hasattr(injected, "describe") else "",
            states=result,
            retried=sorted(f"{t} x{n}" for t, n in tries.items() if n > 1),
        )
        self.cell.runs.append(record)
        return record, verdict
