"""The Airflow UI in headless Chromium (Debian's package, driven by Playwright; no browser download):
find the migration, open the trigger form, see the params with their descriptions, trigger, see the run.
Screenshots go to ``artifacts/`` (git-ignored)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.live.conftest import BROWSER, LiveAirflow

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
PARAMS = {
    "Dry run": "change nothing",
    "Backfill batch size": "overriding",
    "Skip queue drain": "do not wait for active jobs",
}


def test_trigger_form_shows_the_params_and_triggers_a_run(live_airflow: LiveAirflow, page: object) -> None:
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(f"{live_airflow.url}/dags?search={BROWSER}")
    link = page.get_by_role("link", name=BROWSER, exact=True)
    expect(link).to_be_visible(timeout=60_000)
    link.click()
    expect(page).to_have_url(re.compile(f"/dags/{BROWSER}"))

    # the graph, wide and alone (the README's picture, docs/dag-graph.png, is one of these)
    page.get_by_role("button", name="Show Graph (Press g)").click()
    page.get_by_role("button", name="Collapse Details Panel").click()
    page.set_viewport_size({"width": 1900, "height": 480})
    page.get_by_role("button", name="Expand all task groups").click()
    expect(page.get_by_text("verify_expand").first).to_be_visible(timeout=30_000)
    page.wait_for_timeout(2000)  # let the graph lay itself out and fit the view
    page.locator(".react-flow").screenshot(path=str(ARTIFACTS / "dag-graph.png"))
    page.set_viewport_size({"width": 1400, "height": 900})

    page.get_by_role("button", name="Trigger Dag").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text("Run Parameters")).to_be_visible(timeout=30_000)
    for title, description in PARAMS.items():
        expect(dialog.get_by_label(title)).to_have_count(1)  # the param's input, labelled by its title
        expect(dialog.get_by_text(description, exact=False)).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "trigger-form.png"))

    dialog.get_by_role("button", name="Trigger").click()
    expect(page).to_have_url(re.compile(f"/dags/{BROWSER}/runs/manual__"), timeout=30_000)
    run_id = page.url.rsplit("/runs/", 1)[1].split("?")[0]
    expect(page.get_by_text(run_id).first).to_be_visible(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "dag-run.png"))
    runs = live_airflow.api("GET", f"/dags/{BROWSER}/dagRuns")["dag_runs"]
    assert run_id in {r["dag_run_id"] for r in runs}, runs
