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
    """The view's data once a partition has committed batches and is still running."""
    deadline = time.monotonic() + timeout
    seen: Any = None
    while time.monotonic() < deadline:
        response = live.client.get(f"{live.url}/expand/api/migrations/{VIEW}")
        if response.status_code == 200:
            seen = response.json()
            if any(p["status"] == "running" and p["rows_done"] > 0 for p in seen["backfill"]):
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
