"""A person's decisions about a migration (the contract approval: contract now, wait, roll back), kept in
the ledger's ``decisions`` table with who made them, so the timeline and the post-mortem can show them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from airflow_provider_expand.engine.ledger.store import DEFAULT_SCHEMA
from airflow_provider_expand.engine.redact import redact_url


@dataclass(frozen=True)
class DecisionRecord:
    """One row of ``decisions``."""

    migration_id: str
    at: dt.datetime
    kind: str
    choice: str
    actor: str
    detail: str | None
    run_id: str | None


class Decisions:
    """Appends and reads decisions in ``schema`` (created by :meth:`Ledger.ensure`, ledger version 3)."""

    def __init__(self, schema: str = DEFAULT_SCHEMA) -> None:
        self.schema = schema

    def _table(self) -> sql.Composed:
        return sql.SQL("{}.decisions").format(sql.Identifier(self.schema))

    def record(
        self,
        conn: psycopg.Connection,
        migration_id: str,
        *,
        kind: str,
        choice: str,
        actor: str,
        detail: str | None = None,
        run_id: str | None = None,
    ) -> None:
        with conn.transaction():
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (migration_id, kind, choice, actor, detail, run_id)"
                    " VALUES (%s, %s, %s, %s, %s, %s)"
                ).format(self._table()),
                (migration_id, kind, choice, actor, detail and redact_url(detail), run_id),
            )

    def list(self, conn: psycopg.Connection, migration_id: str) -> list[DecisionRecord]:
        """Oldest first; none when the ledger predates the table."""
        found = conn.execute("SELECT to_regclass(%s)", (f'"{self.schema}".decisions',)).fetchone()
        if not found or found[0] is None:
            return []
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                sql.SQL("SELECT * FROM {} WHERE migration_id = %s ORDER BY at").format(self._table()),
                (migration_id,),
            )
            return [DecisionRecord(**r) for r in cur.fetchall()]
