"""(c) Every connection to the target database is terminated once, mid-step (a failover, a pooler restart):
the app's too, which reconnects. The task must retry (the loss is transient) and resume, and the run
complete with every invariant holding; a re-run is then a no-op that succeeds."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.failures.faults import MID_STEP, SnapshotHolder, Terminator, sleep_after_first_statement
from tests.failures.outcomes import assert_completes
from tests.failures.scenario import Scenario
from tests.failures.test_definitive import FAIL_AFTER_EXPAND


def _terminator(s: Scenario, step: str) -> Callable[[], Terminator]:
    return lambda: Terminator(s.env.dsn, MID_STEP[step], {"id": s.migration_id}).start()


def _completes_after_the_cut(s: Scenario, step: str, task: str, *, retried: bool = True) -> None:
    record, verdict = s.run("run 1", fault=_terminator(s, step), expect_shape=["contract"])
    assert record.fault.startswith("terminated"), record.fault
    # the task's own connection was cut: it took a second try (the soak held none)
    assert retried == any(r.startswith(f"{task} x") for r in record.retried), record.retried
    assert record.state == "success", record.states
    assert verdict.ok and verdict.phase == "completed", verdict.summary()
    assert record.states[task] == "success" and record.rollback == "skipped", record.states
    assert_completes(s, "re-run")


def test_expand_connection_cut(scenario: Callable[..., Scenario]) -> None:
    s = scenario(
        "expand",
        "cut during expand.sql (its transaction group, a `pg_sleep(2)` injected)",
        "retried, the group re-applied; completes",
        "connection",
    )
    s.edit("expand.sql", sleep_after_first_statement)
    _completes_after_the_cut(s, "expand", "expand")


def test_backfill_connection_cut(scenario: Callable[..., Scenario]) -> None:
    s = scenario(
        "backfill.products",
        "cut after a checkpoint (rows_done > 0, batches of 500)",
        "retried, resumes from the checkpoint; completes",
        "connection",
    )
    _completes_after_the_cut(s, "backfill", "backfill.products")


def test_index_connection_cut(scenario: Callable[..., Scenario]) -> None:
    s = scenario(
        "index",
        "cut while CREATE INDEX CONCURRENTLY waits for an old snapshot the test holds",
        "retried, the invalid index dropped and rebuilt; completes",
        "connection",
    )
    holder: list[SnapshotHolder] = []

    def fault() -> Terminator:
        holder.append(SnapshotHolder(s.env.dsn))
        return _terminator(s, "index")()

    try:
        record, verdict = s.run("run 1", fault=fault, expect_shape=["contract"])
    finally:
        for h in holder:
            h.close()
    assert record.fault.startswith("terminated"), record.fault
    assert record.state == "success", record.states
    assert verdict.ok and verdict.phase == "completed", verdict.summary()
    assert_completes(s, "re-run")


def test_soak_connection_cut(scenario: Callable[..., Scenario]) -> None:
    s = scenario(
        "soak",
        "cut while the soak is deferred (8 s soak)",
        "the soak holds no connection; the app reconnects; completes",
        "connection",
        overrides={"soak": "8s"},
    )
    _completes_after_the_cut(s, "soak", "soak", retried=False)


def test_contract_connection_cut(scenario: Callable[..., Scenario]) -> None:
    s = scenario(
        "contract",
        "cut during contract.sql (its transaction group, a `pg_sleep(2)` injected)",
        "retried, resumes the contract (no rollback.sql); completes",
        "connection",
    )
    s.edit("contract.sql", sleep_after_first_statement)
    _completes_after_the_cut(s, "contract", "contract")


def test_rollback_connection_cut(scenario: Callable[..., Scenario]) -> None:
    s = scenario(
        "rollback",
        "verify_expand fails; cut during rollback.sql (a `pg_sleep(2)` injected)",
        "the rollback retried and finished: pre, rolled_back",
        "connection",
    )
    s.edit_spec(lambda spec: spec.__setitem__("verify", [*spec["verify"], FAIL_AFTER_EXPAND]))
    s.edit("rollback.sql", sleep_after_first_statement)
    record, verdict = s.run("run 1", fault=_terminator(s, "rollback"), expect_shape=["pre"])
    assert record.fault.startswith("terminated"), record.fault
    assert record.state == "failed" and record.rollback == "success", record.states
    assert verdict.ok and verdict.phase == "rolled_back", verdict.summary()


SLOW_CHECK = {"name": "slow check", "sql": "SELECT count(*) FROM (SELECT pg_sleep(2)) s", "expect": 1}


@pytest.mark.parametrize("after", ["expand", "contract"])
def test_verify_connection_cut(scenario: Callable[..., Scenario], after: str) -> None:
    task = "verify_expand" if after == "expand" else "verify"
    s = scenario(
        task,
        f"cut during a 2 s check after {after}",
        "retried (no rollback); completes",
        "connection",
    )
    s.edit_spec(lambda spec: spec.__setitem__("verify", [*spec["verify"], {**SLOW_CHECK, "after": after}]))
    _completes_after_the_cut(s, "verify", task)
