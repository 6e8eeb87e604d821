"""(a) Each task fails definitively (bad SQL, a constraint, a failing check), injected in a copy of the
example migration, never in product code. Until the contract a definitive failure rolls back to the
pre-migration schema; from the contract on the migration only goes forward. Then the file is fixed and
the DAG re-run: it completes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.failures.outcomes import assert_completes, assert_rolled_back
from tests.failures.scenario import BACKFILL, Scenario

FAIL_AFTER_EXPAND = {"name": "injected failure", "sql": "SELECT 1", "expect": 2, "after": "expand"}
FAIL_AFTER_CONTRACT = {"name": "injected failure", "sql": "SELECT 1", "expect": 2, "after": "contract"}


def _append(statement: str) -> Callable[[str], str]:
    return lambda text: text.rstrip() + "\n\n" + statement + "\n"


def test_expand_fails_on_its_last_statement(scenario: Callable[..., Scenario]) -> None:
    s = scenario(
        "expand",
        "expand.sql ends with `SELECT 1/0`",
        "rolled back (pre); fixed re-run completes",
        "definitive",
    )
    s.edit("expand.sql", _append("SELECT 1/0;"))
    assert_rolled_back(s, "expand")
    s.fix()
    assert_completes(s, "re-run (fixed)")


def test_verify_expand_check_fails(scenario: Callable[..., Scenario]) -> None:
    s = scenario(
        "verify_expand",
        "a check after expand expects 2, gets 1",
        "rolled back (pre); fixed re-run completes",
        "definitive",
    )
    s.edit_spec(lambda spec: spec.__setitem__("verify", [*spec["verify"], FAIL_AFTER_EXPAND]))
    assert_rolled_back(s, "verify_expand")
    s.fix()
    assert_completes(s, "re-run (fixed)")


def test_backfill_set_raises_for_one_row(scenario: Callable[..., Scenario]) -> None:
    s = scenario(
        "backfill.products",
        "`set` raises for id 123 (`CASE WHEN id = 123 THEN (1/0)::text ELSE title END`)",
        "rolled back (pre); fixed re-run completes",
        "definitive",
    )
    bad = {
        **BACKFILL,
        "set": "name = CASE WHEN id = 123 THEN (1/0)::text ELSE title END, "
        "price_cents = round(price * 100)::bigint",
    }
    s.edit_spec(lambda spec: spec.__setitem__("backfill", [bad]))
    assert_rolled_back(s, "backfill.products")
    s.fix()
    assert_completes(s, "re-run (fixed)")


def test_index_cannot_be_built(scenario: Callable[..., Scenario]) -> None:
    s = scenario(
        "index",
        "unique index on `shop_id` (duplicates)",
        "rolled back (pre), no invalid index left; fixed re-run completes",
        "definitive",
    )

    def unique_on_shop(spec: dict[str, Any]) -> None:
        spec["indexes"] = [{**spec["indexes"][0], "columns": ["shop_id"], "unique": True}]

    s.edit_spec(unique_on_shop)
    assert_rolled_back(s, "index.idx_products_name")
    s.fix()
    assert_completes(s, "re-run (fixed)")


def test_queue_pause_refused(scenario: Callable[..., Scenario]) -> None:
    s = scenario(
        "queues.pause",
        "the queue's keys are no known BullMQ layout (meta.version gone, events kept)",
        "nothing applied (pre); fixed re-run completes",
        "definitive",
    )
    meta = f"{s.env.prefix}:sync:meta"
    version = s.env.redis.hget(meta, "version")
    s.env.redis.hdel(meta, "version")
    s.env.redis.xadd(f"{s.env.prefix}:sync:events", {"event": "added"})
    record, verdict = s.run("run 1")
    assert record.state == "failed" and record.states["queues.pause"] == "failed", record.states
    assert record.states.get("expand") in ("upstream_failed", "skipped"), record.states
    assert verdict.ok and verdict.shape == "pre", verdict.summary()
    assert version is not None
    s.env.redis.hset(meta, "version", version)
    assert_completes(s, "re-run (fixed)")


def test_queue_drain_times_out(scenario: Callable[..., Scenario]) -> None:
    s = scenario(
        "queues.drain",
        "a job stays active (live lock) past a 2 s drain_timeout",
        "nothing applied (pre), queue resumed; re-run after the job ends completes",
        "definitive",
    )
    s.edit_spec(lambda spec: spec["queues"].__setitem__("drain_timeout", "2s"))
    active, lock = f"{s.env.prefix}:sync:active", f"{s.env.prefix}:sync:1:lock"
    s.env.redis.lrem(f"{s.env.prefix}:sync:wait", 0, "1")
    s.env.redis.lpush(active, "1")
    s.env.redis.set(lock, "worker-token", ex=600)
    record, verdict = s.run("run 1")
    assert record.state == "failed" and record.states["queues.drain"] == "failed", record.states
    assert verdict.ok and verdict.shape == "pre", verdict.summary()
    s.env.redis.delete(active, lock)
    s.fix()
    assert_completes(s, "re-run (job done)")


def test_contract_half_applied_then_fixed(scenario: Callable[..., Scenario]) -> None:
    s = scenario(
        "contract",
        "contract.sql: `DROP COLUMN title` commits, then `DROP INDEX CONCURRENTLY` of a missing index fails"
        " (the issue's data-loss scenario)",
        "no rollback.sql (forward-only), schema post-contract, `name` keeps the data; re-run unfixed: the"
        " same; fixed re-run completes",
        "definitive",
    )
    s.edit("contract.sql", _append("DROP INDEX CONCURRENTLY idx_products_missing;"))
    for label in ("run 1", "re-run (unfixed)"):
        record, verdict = s.run(label, expect_shape=["contract"])
        assert record.state == "failed" and record.states["contract"] == "failed", record.states
        assert record.rollback != "success", record.states
        assert verdict.ok, verdict.summary()
        assert verdict.phase == "contracting", verdict.summary()
    s.fix()
    assert_completes(s, "re-run (fixed)")


def test_verify_after_contract_fails(scenario: Callable[..., Scenario]) -> None:
    s = scenario(
        "verify",
        "a check after the contract expects 2, gets 1",
        "no rollback (forward-only), schema post-contract; fixed re-run completes",
        "definitive",
    )
    s.edit_spec(lambda spec: spec.__setitem__("verify", [*spec["verify"], FAIL_AFTER_CONTRACT]))
    record, verdict = s.run("run 1", expect_shape=["contract"])
    assert record.state == "failed" and record.states["verify"] == "failed", record.states
    assert record.rollback != "success" and verdict.ok, verdict.summary()
    s.fix()
    assert_completes(s, "re-run (fixed)")


def test_rollback_itself_fails(scenario: Callable[..., Scenario]) -> None:
    s = scenario(
        "rollback",
        "verify_expand fails and rollback.sql ends with `SELECT 1/0`",
        "rollback fails in its transaction group: schema stays post-expand, phase failed; the re-run with"
        " both fixed ends consistent (pre or post-contract)",
        "definitive",
    )
    s.edit_spec(lambda spec: spec.__setitem__("verify", [*spec["verify"], FAIL_AFTER_EXPAND]))
    s.edit("rollback.sql", _append("SELECT 1/0;"))
    record, verdict = s.run("run 1", expect_shape=["expand", "expand+index"])
    assert record.state == "failed" and record.rollback == "failed", record.states
    assert verdict.ok, verdict.summary()
    s.fix()
    record, verdict = s.run("re-run (fixed)", expect_shape=["pre", "contract"])
    assert verdict.ok, verdict.summary()
