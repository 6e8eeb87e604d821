"""Where each migration stands, as plain data for the UI's migration view (``/expand/api/migrations``):
phase, timeline, each backfill partition's progress with rows/s and ETA, the soak's countdown and what
holds the migration. Read from the ledger alone, so any api-server (or the CLI) can show it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from airflow_provider_expand.engine.ledger.decisions import DecisionRecord
from airflow_provider_expand.engine.ledger.store import STAMP_COLUMNS, MigrationRecord, StepRecord
from airflow_provider_expand.engine.ledger.timeline import timeline_events
from airflow_provider_expand.engine.soak import ContractWindow, soak_until

BACKFILL_PREFIX = "backfill:"
# the contract approval's step while a person is asked (operators/approval.py writes it)
APPROVAL_STEP = "approval:contract"


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(dt.UTC).isoformat() if moment else None


def partition_progress(step: StepRecord, now: dt.datetime) -> dict[str, Any]:
    """One backfill partition: rows done of total, its average rate since it started, and the ETA."""
    end = step.finished_at if step.status != "running" and step.finished_at else now
    elapsed = (end - step.started_at).total_seconds() if step.started_at else 0.0
    rate = step.rows_done / elapsed if elapsed > 0 and step.rows_done else None
    total = step.rows_total
    percent = (
        min(100.0, 100.0 * step.rows_done / total) if total else (100.0 if step.status == "success" else 0.0)
    )
    eta = None
    if step.status == "running" and total is not None and rate:
        eta = max(total - step.rows_done, 0) / rate
    return {
        "table": step.step.removeprefix(BACKFILL_PREFIX),
        "partition": step.part,
        "status": step.status,
        "rows_done": step.rows_done,
        "rows_total": total,
        "percent": round(percent, 1),
        "rows_per_second": round(rate, 1) if rate else None,
        "eta_seconds": round(eta, 1) if eta is not None else None,
        "batch_size": step.batch_size,
        "started_at": _iso(step.started_at),
        "finished_at": _iso(step.finished_at),
    }


def soak_countdown(
    record: MigrationRecord, soak: dt.timedelta | None, window: ContractWindow | None, now: dt.datetime
) -> dict[str, Any] | None:
    """The soak counts from the deploy (or the expand): when it ends and how long is left."""
    if soak is None:
        return None
    base = record.deployed_at or record.expanded_at
    ends: dt.datetime | None = soak_until(base, soak, window) if base else None
    if record.soaked_at or record.contract_started_at:
        state = "done"
    elif record.phase in ("rolling_back", "rolled_back", "failed"):
        state = "stopped"
    elif ends is None:
        state = "not started"
    else:
        state = "soaking" if record.phase == "soaking" else "counting"
    remaining = (
        max((ends - now).total_seconds(), 0.0)
        if ends is not None and state in ("soaking", "counting")
        else None
    )
    return {
        "duration_seconds": soak.total_seconds(),
        "contract_window": str(window) if window else None,
        "from": _iso(base),
        "ends_at": _iso(ends),
        "remaining_seconds": round(remaining, 1) if remaining is not None else None,
        "state": state,
    }


def holds(steps: Sequence[StepRecord]) -> list[dict[str, Any]]:
    """What keeps the migration from moving on: a person's approval asked for, a health gate held."""
    found = []
    for step in steps:
        if step.step == APPROVAL_STEP and step.status == "running":
            found.append(
                {
                    "kind": "approval",
                    "step": step.step,
                    "since": _iso(step.started_at),
                    "detail": "waiting for a person to approve the contract (Required Actions)",
                }
            )
        elif step.status == "running" and step.error:  # a health gate holds it (Ledger.note_hold)
            found.append(
                {
                    "kind": "health",
                    "step": step.step if step.part == 0 else f"{step.step}[{step.part}]",
                    "since": _iso(step.started_at),
                    "detail": step.error or "held by a health gate",
                }
            )
    return found


def migration_overview(
    record: MigrationRecord,
    steps: Sequence[StepRecord],
    decisions: Sequence[DecisionRecord] = (),
    *,
    soak: dt.timedelta | None = None,
    window: ContractWindow | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Everything the view shows about one migration, JSON-ready."""
    now = now or dt.datetime.now(dt.UTC)
    dag_id = record.dag_id or record.id
    links = {"dag": f"/dags/{quote(dag_id, safe='')}"}
    if record.run_id:
        links["run"] = f"{links['dag']}/runs/{quote(record.run_id, safe=':+')}"
    return {
        "id": record.id,
        "dag_id": dag_id,
        "run_id": record.run_id,
        "phase": record.phase,
        "updated_at": _iso(record.updated_at),
        "stamps": {column: _iso(getattr(record, column)) for column in STAMP_COLUMNS},
        "timeline": [
            {"at": _iso(at), "event": text} for at, text in timeline_events(record, steps, decisions)
        ],
        "backfill": [partition_progress(s, now) for s in steps if s.step.startswith(BACKFILL_PREFIX)],
        "soak": soak_countdown(record, soak, window, now),
        "holds": holds(steps),
        "decisions": [
            {"at": _iso(d.at), "kind": d.kind, "choice": d.choice, "actor": d.actor, "detail": d.detail}
            for d in decisions
        ],
        "links": links,
    }
