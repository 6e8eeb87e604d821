"""The two outcomes most cells expect of a run, asserted on its record and the invariant checker's verdict."""

from __future__ import annotations

from tests.failures.invariants import Verdict
from tests.failures.matrix import RunRecord
from tests.failures.scenario import Scenario


def assert_rolled_back(s: Scenario, task: str, label: str = "run 1") -> tuple[RunRecord, Verdict]:
    """``task`` failed, the rollback ran, and everything is back to the pre-migration schema."""
    record, verdict = s.run(label, expect_shape=["pre"])
    assert record.state == "failed", record.states
    assert record.states[task] == "failed", record.states
    assert record.rollback == "success", record.states
    assert verdict.ok, verdict.summary()
    assert verdict.phase == "rolled_back", verdict.summary()
    return record, verdict


def assert_completes(s: Scenario, label: str) -> tuple[RunRecord, Verdict]:
    """The run succeeds with the contract applied and every invariant holding."""
    record, verdict = s.run(label, expect_shape=["contract"])
    assert record.state == "success", record.states
    assert verdict.ok, verdict.summary()
    assert verdict.phase == "completed", verdict.summary()
    return record, verdict
