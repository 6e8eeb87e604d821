"""(b) The task's process is SIGKILLed mid-step (a lost worker), through the LocalExecutor
(``dag.test(use_executor=True)``): its supervisor reports it failed, Airflow retries it, and the step
resumes from its checkpoint. Only steps with something to resume: the backfill, the index build, the
transaction groups of expand and contract."""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
import pytest

from tests.failures.executor import run_with_executor
from tests.failures.faults import (
    MID_STEP,
    Killer,
    SnapshotHolder,
    SqlProbe,
    sleep_after_first_statement,
)
from tests.failures.outcomes import assert_completes
from tests.failures.scenario import Scenario

pytestmark = pytest.mark.usefixtures("executor_api")

ORPHANS = (
    "SELECT p.pid FROM pg_stat_progress_create_index p JOIN pg_database d ON d.oid = p.datid"
    " WHERE d.datname = current_database()"
)


def _killed_then_completes(s: Scenario, step: str, task: str, *, hold_snapshot: bool = False) -> None:
    holders: list[SnapshotHolder] = []

    def end_long_transaction() -> str | None:
        """Whether the killed build's backend outlives its client (it would wait on for the old
        transaction), then the old transaction ends."""
        if not holders:
            return None
        with psycopg.connect(s.env.dsn, autocommit=True) as conn:
            pids = [r[0] for r in conn.execute(ORPHANS).fetchall()]
            time.sleep(2.5)
            left = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)
            ).fetchone()
        for holder in holders:
            holder.close()
        alive = bool(left and left[0])
        return f"the killed build's backend {'still ran' if alive else 'had ended'} 2.5 s after the kill"

    def fault() -> Killer:
        if hold_snapshot:
            holders.append(SnapshotHolder(s.env.dsn))
        return Killer(
            SqlProbe(s.env.dsn, MID_STEP[step], {"id": s.migration_id}),
            s.env.home / "airflow.db",
            s.migration_id,
            task,
            on_kill=end_long_transaction,
        ).start()

    try:
        record, verdict = s.run("run 1", fault=fault, expect_shape=["contract"], runner=run_with_executor)
    finally:
        for holder in holders:
            holder.close()
    assert record.fault.startswith("SIGKILLed"), record.fault
    assert any(r.startswith(f"{task} x") for r in record.retried), record.retried
    assert record.state == "success", record.states
    assert record.states[task] == "success" and record.rollback == "skipped", record.states
    assert verdict.ok and verdict.phase == "completed", verdict.summary()
    assert_completes(s, "re-run")


def test_backfill_killed(scenario: Callable[..., Scenario]) -> None:
    s = scenario(
        "backfill.products",
        "SIGKILL after a checkpoint (rows_done > 0)",
        "retried, resumes from the checkpoint; completes",
        "kill",
    )
    _killed_then_completes(s, "backfill", "backfill.products")


def test_index_killed(scenario: Callable[..., Scenario]) -> None:
    s = scenario(
        "index",
        "SIGKILL while CREATE INDEX CONCURRENTLY waits for an old snapshot",
        "retried, the invalid index dropped and rebuilt; completes",
        "kill",
    )
    _killed_then_completes(s, "index", "index.idx_products_name", hold_snapshot=True)


def test_expand_killed(scenario: Callable[..., Scenario]) -> None:
    s = scenario(
        "expand",
        "SIGKILL inside expand.sql's transaction group (`pg_sleep(2)` injected)",
        "the group rolled back by the server; retried, re-applied; completes",
        "kill",
    )
    s.edit("expand.sql", sleep_after_first_statement)
    _killed_then_completes(s, "expand", "expand")


def test_contract_killed(scenario: Callable[..., Scenario]) -> None:
    s = scenario(
        "contract",
        "SIGKILL inside contract.sql's transaction group (`pg_sleep(2)` injected)",
        "retried, resumes the contract (no rollback.sql); completes",
        "kill",
    )
    s.edit("contract.sql", sleep_after_first_statement)
    _killed_then_completes(s, "contract", "contract")
