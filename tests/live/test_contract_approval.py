"""The contract approval on a real Airflow: a person's "Roll back" in Required Actions (answered through
the REST API's HITL endpoint, as the UI does) rolls the migration back; the ledger names who chose it.
Meanwhile the run passes its expected time and its Deadline Alert mails the spec's recipients."""

from __future__ import annotations

import html
import time

import psycopg

from airflow_provider_expand.engine.ledger.decisions import Decisions
from airflow_provider_expand.engine.ledger.store import Ledger
from tests.live.conftest import APPROVAL, DEADLINE, LiveAirflow


def test_a_person_choosing_roll_back_rolls_the_migration_back(live_airflow: LiveAirflow) -> None:
    run_id = live_airflow.trigger(APPROVAL, {})
    deadline = time.monotonic() + 420
    while time.monotonic() < deadline and not live_airflow.awaiting_input(
        APPROVAL, run_id, "approve_contract"
    ):
        time.sleep(2)
    detail = live_airflow.hitl(APPROVAL, run_id, "approve_contract")
    assert detail is not None, f"never asked\n{live_airflow.logs()}"
    assert detail["options"] == ["Contract now", "Wait", "Roll back"] and detail["defaults"] == ["Wait"], (
        detail
    )
    with psycopg.connect(live_airflow.dsns[APPROVAL], autocommit=True) as conn:
        record = Ledger().get(conn, APPROVAL)
    assert record is not None and record.phase == "soaking", record  # asking rolls nothing back

    # the run has passed its expected time (notify.deadline): the Deadline Alert mailed the spec's recipients
    late = f"{APPROVAL} still running after its expected {DEADLINE}"
    while time.monotonic() < deadline and not any(late in s for s in live_airflow.inbox.subjects()):
        time.sleep(2)
    assert any(late in s for s in live_airflow.inbox.subjects()), (
        live_airflow.inbox.subjects(),
        live_airflow.logs(),
    )
    body = live_airflow.inbox.body(late)
    # sent from the triggerer 15 s after the run was queued, with the ledger's timeline as it stood then
    assert f"run: {html.escape(run_id)}" in body, body
    assert f"migration {APPROVAL}: phase " in body and "ledger unreadable" not in body, body

    live_airflow.answer(APPROVAL, run_id, "approve_contract", "Roll back")
    state, _ = live_airflow.watch(APPROVAL, run_id)
    final = {ti["task_id"]: ti["state"] for ti in live_airflow.task_instances(APPROVAL, run_id)}
    assert state == "failed", final
    assert final["approve_contract"] == "failed" and final["rollback"] == "success", final
    assert final["contract"] == "upstream_failed", final
    with psycopg.connect(live_airflow.dsns[APPROVAL], autocommit=True) as conn:
        record = Ledger().get(conn, APPROVAL)
        decisions = Decisions().list(conn, APPROVAL)
        columns = {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'products'"
            )
        }
    assert record is not None and record.phase == "rolled_back", record
    assert [(d.choice, d.actor) for d in decisions] == [("Roll back", "admin")], decisions
    assert "title" in columns and "name" not in columns, columns  # expand undone, nothing contracted
