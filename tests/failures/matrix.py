"""The fault matrix as data: each cell records its runs as they happen, and the session writes the table
(``EXPAND_WRITE_MATRIX=docs/failure-matrix.md``), so the document comes from a run, never from a hand.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path

WRITE_ENV = "EXPAND_WRITE_MATRIX"


@dataclass
class RunRecord:
    """One trigger of the DAG in a cell and what the checker said afterwards."""

    label: str
    state: str
    failed: list[str]
    rollback: str
    seconds: float
    verdict: str
    fault: str = ""
    states: dict[str, str] = field(default_factory=dict)
    retried: list[str] = field(default_factory=list)  # "task xN": tasks that took N tries


@dataclass
class Cell:
    """A task x fault of the matrix, its expected outcome, and (filled in by the run) what happened."""

    task: str
    fault: str
    expected: str
    kind: str  # definitive | connection | kill
    runs: list[RunRecord] = field(default_factory=list)
    outcome: str = "not run"  # passed | failed | xfail | xpass
    needs: str = ""
    seconds: float = 0.0
    error: str = ""

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "_", f"{self.kind[:4]}_{self.task}".lower()).strip("_")[:24]


CELLS: list[Cell] = []

_KINDS = {
    "definitive": "(a) definitive failure",
    "kill": "(b) task process SIGKILLed",
    "connection": "(c) every connection terminated mid-step",
}


def _run_text(run: RunRecord) -> str:
    failed = ("failed: " + ", ".join(run.failed)) if run.failed else "none failed"
    fault = f"; fault: {run.fault}" if run.fault else ""
    retried = f"; tries: {', '.join(run.retried)}" if run.retried else ""
    return (
        f"**{run.label}**: {run.state} ({failed}{retried}; rollback {run.rollback}; {run.seconds:.0f} s{fault})"
        f" -> {run.verdict}"
    )


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(cells: list[Cell], total_seconds: float) -> str:
    """The matrix as Markdown: one table per kind of fault, then the cells waiting for a fix."""
    lines = [
        "# Failure matrix",
        "",
        "Written by `EXPAND_WRITE_MATRIX=docs/failure-matrix.md pytest tests/failures` from an actual run"
        " (do not edit by hand). Each cell runs the example migration (`products_title_to_name`) through"
        " `dag.test()` (the kill cells: `dag.test(use_executor=True)`, the LocalExecutor and an api-server)"
        " on a small table with the application writing meanwhile and a BullMQ queue on"
        " real Redis, injects one fault, then re-runs the DAG (with the fault removed where it was in a"
        " file). After every run the checker verifies: the schema is exactly the pre-migration, post-expand"
        " (with or without the index) or post-contract one (`pg_dump --schema-only` against references made"
        " in the session), every row is right and none lost, no invalid index, no queue left paused by us"
        " and no marker left, the ledger phase agrees with the schema, and `rollback.sql` never started"
        " after the contract began.",
        "",
        f"Run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.node() or 'this machine'}"
        f" ({os.cpu_count()} cores); {len(cells)} cells in {total_seconds:.0f} s.",
        "",
        "Outcome: `passed` = the expected outcome and every invariant held; `xfail` = fails today and waits"
        " for the fix named (`xfail(strict=True)`, flipped when it merges); `failed` = a finding. In the"
        " runs, `tries: task xN` names the tasks Airflow ran N times (a retry after the fault).",
        "",
    ]
    for kind, title in _KINDS.items():
        chosen = [c for c in cells if c.kind == kind]
        if not chosen:
            continue
        lines += [
            f"## {title}",
            "",
            "| task | fault | expected | outcome | runs and invariants |",
            "|---|---|---|---|---|",
        ]
        for c in chosen:
            runs = "<br>".join(_escape(_run_text(r)) for r in c.runs) or _escape(c.error or "-")
            outcome = c.outcome + (f" ({c.needs})" if c.needs else "") + f", {c.seconds:.0f} s"
            lines.append(f"| {c.task} | {_escape(c.fault)} | {_escape(c.expected)} | {outcome} | {runs} |")
        lines.append("")
    waiting = [c for c in cells if c.needs]
    if waiting:
        lines += ["## Cells waiting for a fix", "", "| cell | needs |", "|---|---|"]
        lines += [f"| {c.kind}: {c.task} | {_escape(c.needs)} |" for c in waiting]
        lines.append("")
    return "\n".join(lines)


def write_if_asked(total_seconds: float) -> Path | None:
    target = os.environ.get(WRITE_ENV)
    if not target or not CELLS:
        return None
    path = Path(target)
    path.write_text(render(CELLS, total_seconds) + "\n")
    return path
