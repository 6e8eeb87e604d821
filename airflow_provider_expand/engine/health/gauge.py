"""One backfill step's health, start to end: its gates' hold, its background VACUUM, the table's size
before and after, and the summary line and fields the step ends with."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from airflow_provider_expand.engine.backfill.plan import Target
from airflow_provider_expand.engine.database import Connector
from airflow_provider_expand.engine.health.bloat import TableSize, Vacuumer, growth_line
from airflow_provider_expand.engine.health.hold import Hold, gates_for
from airflow_provider_expand.engine.health.settings import HealthSettings

if TYPE_CHECKING:
    from airflow_provider_expand.engine.backfill.pacing import Pacer


@dataclass
class StepHealth:
    """The step's health: the gates' hold, the background VACUUM, the table's size before and after."""

    oid: int
    hold: Hold
    vacuum: Vacuumer
    before: TableSize
    label: str
    log: logging.Logger

    @classmethod
    def start(
        cls,
        connect: Connector,
        conn: psycopg.Connection,
        target: Target,
        health: HealthSettings,
        label: str,
        log: logging.Logger,
    ) -> StepHealth:
        row = conn.execute("SELECT to_regclass(%s)::oid", (target.label,)).fetchone()
        assert row is not None and row[0] is not None
        oid = int(row[0])
        hold = Hold(gates_for(health, oid, target.label, set()), health.max_hold.total_seconds(), label, log)
        vacuum = Vacuumer(connect, target.table, target.label, target.reltuples, log, enabled=health.vacuum)
        return cls(oid, hold, vacuum, TableSize.read(conn, oid), label, log)

    def finish(self, conn: psycopg.Connection, pacer: Pacer) -> dict[str, Any]:
        """Log the step's health line (growth, HOT ratio, VACUUMs, holds); the result's summary fields."""
        after = TableSize.read(conn, self.oid)
        vacuum = self.vacuum
        holds = self.hold.summary()
        held = "; ".join(f"{g} held {c['holds']:.0f}x, {c['seconds']:.1f} s" for g, c in holds.items())
        self.log.info(
            "%s: %s; %s; app sessions waited on %d batch(es)%s",
            self.label,
            growth_line(self.before, after, vacuum.updated, vacuum.hot),
            vacuum.summary(),
            pacer.lock_waits,
            f"; {held}" if held else "; no health gate held",
        )
        return {
            "holds": holds,
            "held_seconds": round(pacer.held, 1),
            "lock_waits": pacer.lock_waits,
            "vacuums": vacuum.vacuums,
            "hot_ratio": round(vacuum.hot / vacuum.updated, 3) if vacuum.updated else None,
            "growth": round(after.heap / self.before.heap, 3) if self.before.heap else None,
            "growth_with_indexes": round(after.total / self.before.total, 3) if self.before.total else None,
        }
