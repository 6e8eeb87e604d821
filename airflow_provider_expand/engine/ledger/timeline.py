"""The run's timeline from the ledger: what ran when, what failed, what was rolled back, who decided what —
the material for the post-mortem (the runbook's T+1h), sent with every notification and shown in the UI."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from airflow_provider_expand.engine.ledger.decisions import DecisionRecord
from airflow_provider_expand.engine.ledger.store import MigrationRecord, StepRecord

_STAMPS = (
    ("expanded_at", "expanded"),
    ("deployed_at", "deployed"),
    ("backfilled_at", "backfilled"),
    ("soaked_at", "soaked"),
    ("contract_started_at", "contract started"),
    ("contracted_at", "contracted"),
    ("rolled_back_at", "rolled back"),
)


def _t(moment: dt.datetime | None) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


def _took(step: StepRecord) -> str:
    if step.started_at and step.finished_at:
        return f" in {(step.finished_at - step.started_at).total_seconds():.1f}s"
    return ""


def timeline_events(
    record: MigrationRecord, steps: Sequence[StepRecord], decisions: Sequence[DecisionRecord] = ()
) -> list[tuple[dt.datetime, str]]:
    """(moment, text) oldest first: phase stamps, every step with its outcome, every person's decision."""
    events: list[tuple[dt.datetime, str]] = [
        (moment, f"phase {label}") for attr, label in _STAMPS if (moment := getattr(record, attr)) is not None
    ]
    for step in steps:
        name = step.step if step.part == 0 else f"{step.step}[{step.part}]"
        rows = f", {step.rows_done} rows" if step.rows_done else ""
        error = f": {step.error.strip().splitlines()[0][:300]}" if step.error else ""
        when = step.started_at or step.finished_at or record.updated_at
        events.append((when, f"{name} {step.status}{_took(step)}{rows}{error}"))
    for decision in decisions:
        detail = f" ({decision.detail})" if decision.detail else ""
        events.append((decision.at, f"{decision.kind}: {decision.choice} by {decision.actor}{detail}"))
    return sorted(events, key=lambda e: e[0])


def timeline(
    migration_id: str,
    record: MigrationRecord | None,
    steps: list[StepRecord],
    decisions: Sequence[DecisionRecord] = (),
) -> str:
    """Plain text, oldest first: the migration's phase stamps and every step with its outcome."""
    if record is None:
        return f"migration {migration_id}: no ledger record (it never started)"
    lines = [f"migration {migration_id}: phase {record.phase} (run {record.run_id or '-'})"]
    lines += [f"{_t(moment)}  {text}" for moment, text in timeline_events(record, steps, decisions)]
    failed = [s.step for s in steps if s.status == "failed"]
    if failed:
        lines.append(f"failed: {', '.join(failed)}")
    if record.rolled_back_at or any(s.step.startswith("rollback") for s in steps):
        lines.append(f"rolled back at {_t(record.rolled_back_at)}")
    return "\n".join(lines)
