"""The demo's closing summary, read from the ledger: the migration's phase and, per step, rows and time."""

from __future__ import annotations

import datetime as dt

import psycopg

from airflow_provider_expand.engine.ledger.store import Ledger


def _seconds(start: dt.datetime | None, end: dt.datetime | None) -> str:
    if start is None or end is None:
        return "-"
    return f"{(end - start).total_seconds():.1f} s"


def ledger_summary(conn: psycopg.Connection, migration_id: str, ledger: Ledger | None = None) -> str:
    """A small table: phase and stamps of the migration, then each step with status, rows and duration."""
    ledger = ledger or Ledger()
    record = ledger.get(conn, migration_id)
    if record is None:
        return f"migration {migration_id!r}: no row in the ledger ({ledger.schema}.migrations)"
    lines = [f"migration {record.id}: phase {record.phase}"]
    for stamp in (
        "expanded_at",
        "deployed_at",
        "backfilled_at",
        "soaked_at",
        "contracted_at",
        "rolled_back_at",
    ):
        value = getattr(record, stamp)
        if value is not None:
            lines.append(f"  {stamp:<15} {value.isoformat(timespec='seconds')}")
    lines.append("")
    lines.append(f"  {'step':<28} {'status':<8} {'rows':>20} {'time':>9}")
    for step in ledger.steps(conn, migration_id):
        name = step.step if step.part == 0 else f"{step.step}[{step.part}]"
        rows = f"{step.rows_done:,}" + (f" / {step.rows_total:,}" if step.rows_total is not None else "")
        if not step.rows_done and step.rows_total is None:
            rows = "-"
        lines.append(
            f"  {name:<28} {step.status:<8} {rows:>20} {_seconds(step.started_at, step.finished_at):>9}"
        )
    return "\n".join(lines)
