"""The demo's closing summary, read from the ledger: the migration's phase and, per step, rows and time."""

from __future__ import annotations

import datetime as dt

import psycopg
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from airflow_provider_expand.engine.ledger.store import STAMP_COLUMNS, Ledger


def _seconds(start: dt.datetime | None, end: dt.datetime | None) -> str:
    if start is None or end is None:
        return "-"
    return f"{(end - start).total_seconds():.1f} s"


def ledger_summary(
    conn: psycopg.Connection, migration_id: str, ledger: Ledger | None = None
) -> RenderableType:
    """The migration's phase and stamps, then a table of each step with status, rows and duration."""
    ledger = ledger or Ledger()
    record = ledger.get(conn, migration_id)
    if record is None:
        return Text(f"migration {migration_id!r}: no row in the ledger ({ledger.schema}.migrations)")
    style = {"completed": "bold green", "rolled_back": "bold red", "failed": "bold red"}.get(
        record.phase, "bold"
    )
    head = Text.assemble(f"migration {record.id}: ", (f"phase {record.phase}", style))
    stamps = Table(box=None, show_header=False, padding=(0, 2))
    for stamp in STAMP_COLUMNS:
        value = getattr(record, stamp)
        if value is not None:
            stamps.add_row(stamp, value.isoformat(timespec="seconds"))
    steps = Table(box=box.SIMPLE_HEAD, padding=(0, 1))
    steps.add_column("step")
    steps.add_column("status")
    steps.add_column("rows", justify="right")
    steps.add_column("time", justify="right")
    for step in ledger.steps(conn, migration_id):
        name = step.step if step.part == 0 else f"{step.step}[{step.part}]"
        rows = f"{step.rows_done:,}" + (f" / {step.rows_total:,}" if step.rows_total is not None else "")
        if not step.rows_done and step.rows_total is None:
            rows = "-"
        color = {"success": "green", "failed": "red", "running": "yellow"}.get(step.status, "")
        steps.add_row(name, Text(step.status, color), rows, _seconds(step.started_at, step.finished_at))
    return Group(head, stamps, steps)
