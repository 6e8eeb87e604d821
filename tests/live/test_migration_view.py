"""The migration view (the provider's plugin) on the real api-server: it needs a login, it answers 404 for a
migration no ledger knows, and in Debian's chromium it shows a running backfill moving without a reload,
linked from the DAG page. The screenshot goes to ``artifacts/migration-view.png`` (docs/ has a copy)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.live.conftest import VIEW, LiveAirflow

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
PATHS = ("/expand/migrations", "/expand/api/migrations", f"/expand/api/migrations/{VIEW}")


@pytest.fixture(scope="module")
def view_run(live_airflow: LiveAirflow) -> str:
    return live_airflow.trigger(VIEW, {"batch_size": 10, "dry_run": False, "skip_queue_drain": False})


def _migration(live: LiveAirflow) -> dict[str, Any]:
    response = live.client.get(f"{live.url}/expand/api/migrations/{VIEW}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def _wait_for_backfill(live: LiveAirflow, timeout: float = 300) -> dict[str, Any]:
    """The view's data once both partitions started and one has committed batches and is still running."""
    deadline = time.monotonic() + timeout
    seen: Any = None
    while time.monotonic() < deadline:
        response = live.client.get(f"{live.url}/expand/api/migrations/{VIEW}")
        if response.status_code == 200:
            seen = response.json()
            parts = {p["partition"] for p in seen["backfill"]}
            running = [p for p in seen["backfill"] if p["status"] == "running" and p["rows_done"] > 0]
            if parts == {0, 1} and running:
                return dict(seen)
        time.sleep(1)
    raise AssertionError(f"no running backfill with rows done within {timeout:.0f} s: {seen}\n{live.logs()}")


def test_every_route_needs_an_airflow_login(live_airflow: LiveAirflow) -> None:
    for path in PATHS:
        anonymous = httpx.get(f"{live_airflow.url}{path}", timeout=30)
        assert anonymous.status_code in (401, 403), (path, anonymous.status_code, anonymous.text)
        forged = httpx.get(
            f"{live_airflow.url}{path}", headers={"Authorization": "Bearer forged"}, timeout=30
        )
        assert forged.status_code in (401, 403), (path, forged.status_code, forged.text)
    # a browser without a login is sent to Airflow's login page, and back afterwards
    browser = httpx.get(f"{live_airflow.url}/expand/migrations", headers={"accept": "text/html"}, timeout=30)
    assert browser.status_code == 303, browser.text
    assert browser.headers["location"].startswith("/auth/login/?next="), browser.headers
    logged_in = live_airflow.client.get(f"{live_airflow.url}/expand/api/migrations")
    assert logged_in.status_code == 200, logged_in.text
    assert all(ledger["error"] is None for ledger in logged_in.json()["ledgers"]), logged_in.json()["ledgers"]


def test_an_unknown_migration_is_a_404_naming_it(live_airflow: LiveAirflow) -> None:
    response = live_airflow.client.get(f"{live_airflow.url}/expand/api/migrations/no_such_migration")
    assert response.status_code == 404, response.text
    assert "'no_such_migration'" in response.json()["detail"], response.text


def test_the_view_shows_the_running_backfill_move(
    live_airflow: LiveAirflow, view_run: str, page: object
) -> None:
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    data = _wait_for_backfill(live_airflow)
    assert data["run_id"] == view_run and data["links"]["run"] == f"/dags/{VIEW}/runs/{view_run}", data
    assert {p["partition"] for p in data["backfill"]} == {0, 1}, data["backfill"]
    assert data["soak"] is not None and data["soak"]["duration_seconds"] == 60, data["soak"]
    assert any(e["event"] == "phase expanded" for e in data["timeline"]), data["timeline"]
    # the listing holds it too, with the other migrations' ledgers read
    listed = live_airflow.client.get(f"{live_airflow.url}/expand/api/migrations").json()
    assert VIEW in {m["id"] for m in listed["migrations"]}, listed

    page.goto(f"{live_airflow.url}/expand/migrations")
    card = page.locator(f"article[data-migration='{VIEW}']")
    expect(card).to_be_visible(timeout=30_000)
    running = next(p for p in data["backfill"] if p["status"] == "running")
    bar = card.get_by_role("progressbar", name=f"backfill products[{running['partition']}]")
    expect(bar).to_be_visible()
    first = int(bar.get_attribute("data-rows-done") or 0)
    deadline = time.monotonic() + 60
    moved = first
    while moved <= first and time.monotonic() < deadline:
        page.wait_for_timeout(1000)  # the page refreshes itself every two seconds: no reload here
        moved = int(bar.get_attribute("data-rows-done") or 0)
    assert moved > first, f"the progress bar stayed at {first} rows for 60 s"
    expect(card.get_by_text("rows/s").first).to_be_visible()
    expect(card.get_by_text("ETA").first).to_be_visible()
    expect(card.get_by_test_id("soak-countdown")).to_be_visible()
    expect(card.get_by_test_id("holds").first).to_be_visible()
    expect(card.get_by_role("link", name=f"DAG run {view_run}")).to_have_attribute(
        "href", f"/dags/{VIEW}/runs/{view_run}"
    )
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "migration-view.png"), full_page=True)

    # the DAG page has a "Migration" tab: the same view, for this DAG, inside the Airflow UI
    page.goto(f"{live_airflow.url}/dags/{VIEW}")
    tab = page.get_by_role("link", name="Migration", exact=True)
    expect(tab).to_be_visible(timeout=60_000)
    tab.click()
    frame = page.frame_locator("iframe").first
    expect(frame.locator(f"article[data-migration='{VIEW}']")).to_be_visible(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "migration-tab.png"))


def _wait_for(what: str, check: Any, live: LiveAirflow, timeout: float = 300) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(1)
    raise AssertionError(f"{what} not within {timeout:.0f} s (last: {last})\n{live.logs()}")


def _asking(live: LiveAirflow, run_id: str, decisions: int) -> dict[str, Any] | None:
    """The view's data once ``decisions`` answers are recorded and the approval is asked (again)."""
    if not live.awaiting_input(VIEW, run_id, "approve_contract"):
        return None
    data = _migration(live)
    held = [h for h in data["holds"] if h["kind"] == "approval"]
    return data if held and len(data["decisions"]) == decisions else None


def test_the_contract_waits_for_a_person_and_a_timeout_asks_again(
    live_airflow: LiveAirflow, view_run: str
) -> None:
    """The same run, after its soak: Required Actions asks; "Wait" and then no answer keep it soaking and
    ask again; "Contract now" contracts. Every answer and who gave it is in the ledger's timeline."""
    first = _wait_for("the approval asked", lambda: _asking(live_airflow, view_run, 0), live_airflow, 420)
    assert first["phase"] == "soaking", first
    assert first["soak"]["state"] == "done" or first["soak"]["remaining_seconds"] == 0, first["soak"]
    answered = live_airflow.answer(VIEW, view_run, "approve_contract", "Wait")
    assert answered["chosen_options"] == ["Wait"], answered

    again = _wait_for("asked again after Wait", lambda: _asking(live_airflow, view_run, 1), live_airflow)
    assert again["decisions"][0]["actor"] == "admin" and again["decisions"][0]["choice"] == "Wait"
    assert again["phase"] == "soaking", again
    # nobody answers: after its 20 s timeout it counts as a wait, and asks once more
    third = _wait_for(
        "asked again after the timeout", lambda: _asking(live_airflow, view_run, 2), live_airflow
    )
    assert third["decisions"][1]["choice"] == "Wait", third["decisions"]
    assert third["decisions"][1]["actor"] == "nobody (timeout)", third["decisions"]
    assert third["phase"] == "soaking", third

    live_airflow.answer(VIEW, view_run, "approve_contract", "Contract now")
    state, _ = live_airflow.watch(VIEW, view_run)
    final = {ti["task_id"]: ti["state"] for ti in live_airflow.task_instances(VIEW, view_run)}
    assert state == "success", final
    assert final["rollback"] == "skipped" and final["contract"] == "success", final
    done = _migration(live_airflow)
    assert done["phase"] == "completed" and done["holds"] == [], done
    choices = [(d["choice"], d["actor"]) for d in done["decisions"]]
    assert choices == [("Wait", "admin"), ("Wait", "nobody (timeout)"), ("Contract now", "admin")], choices
    events = [e["event"] for e in done["timeline"]]
    assert "contract approval: Contract now by admin (round 3)" in events, events
