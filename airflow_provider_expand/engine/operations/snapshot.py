"""The schema model a migration planned from, kept in the ledger's schema between its tasks.

The expand reads the catalog once, before its first statement, and stores the model; the backfill, the
index builds, the contract and the rollback plan from that same model (the catalog has changed under
them by then), so every task sees the same statements and a resumed phase matches its checkpoint. A
finished rollback discards it, so a new run after a rollback reads the catalog afresh.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from airflow_provider_expand.engine.ledger.lock import LEDGER_LOCK, xact_lock
from airflow_provider_expand.engine.operations.schema import Schema

TABLE = "operation_snapshots"


def _table(ledger_schema: str) -> sql.Identifier:
    return sql.Identifier(ledger_schema, TABLE)


def ensure(conn: psycopg.Connection, ledger_schema: str) -> None:
    """Create the snapshot table (serialised with the ledger's own creation)."""
    found = conn.execute("SELECT to_regclass(%s)", (f"{ledger_schema}.{TABLE}",)).fetchone()
    if found and found[0]:
        return
    with conn.transaction():
        xact_lock(conn, LEDGER_LOCK)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(ledger_schema)))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (migration_id text PRIMARY KEY, schema_name text NOT NULL, "
                "model jsonb NOT NULL, taken_at timestamptz NOT NULL DEFAULT now())"
            ).format(_table(ledger_schema))
        )


def load(conn: psycopg.Connection, ledger_schema: str, migration_id: str) -> Schema | None:
    """The stored model of ``migration_id``, or None."""
    found = conn.execute("SELECT to_regclass(%s)", (f"{ledger_schema}.{TABLE}",)).fetchone()
    if not found or not found[0]:
        return None
    row = conn.execute(
        sql.SQL("SELECT model FROM {} WHERE migration_id = %s").format(_table(ledger_schema)), (migration_id,)
    ).fetchone()
    if row is None:
        return None
    data: dict[str, Any] = row[0] if isinstance(row[0], dict) else json.loads(row[0])
    return Schema.from_dict(data)


def store(conn: psycopg.Connection, ledger_schema: str, migration_id: str, model: Schema) -> Schema:
    """Keep ``model`` as the migration's snapshot, unless one is stored already (that one is returned)."""
    ensure(conn, ledger_schema)
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (migration_id, schema_name, model) VALUES (%s, %s, %s) "
            "ON CONFLICT (migration_id) DO NOTHING"
        ).format(_table(ledger_schema)),
        (migration_id, model.name, Jsonb(model.to_dict())),
    )
    stored = load(conn, ledger_schema, migration_id)
    assert stored is not None
    return stored


def discard(conn: psycopg.Connection, ledger_schema: str, migration_id: str) -> None:
    """Forget the model (after a finished rollback: a new run starts from the catalog)."""
    found = conn.execute("SELECT to_regclass(%s)", (f"{ledger_schema}.{TABLE}",)).fetchone()
    if found and found[0]:
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE migration_id = %s").format(_table(ledger_schema)), (migration_id,)
        )
