"""Several migrations in flight: each holds the tables it touches from its ``begin`` until its contract
ends (or its rollback), and ``begin`` refuses a migration whose tables another one holds.

A hold is a row ``(migration_id, table_name)`` written by ``begin``; it counts while its migration's ledger
phase is one of :data:`HOLDING_PHASES`, so it ends by itself when the migration completes or is rolled
back. Claims are serialised by one advisory
lock, so two ``begin``s cannot both pass. Tables are the unit: two migrations on one table would each show
the other's columns in the old shape through their views.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from airflow_provider_expand.engine.errors import DefinitiveError
from airflow_provider_expand.engine.ledger.lock import HOLDS_LOCK, LEDGER_LOCK, xact_lock

TABLE = "holds"
# from begin (pending) until the contract ends: a migration that stopped before its expand keeps its
# claim until it is re-run; failed ones may have left their objects, so they hold too
HOLDING_PHASES = (
    "pending",
    "expanding",
    "expanded",
    "deployed",
    "backfilled",
    "soaking",
    "contracting",
    "failed",
)


class TableHeldError(DefinitiveError):
    """Another migration in flight holds a table this one touches."""


@dataclass(frozen=True)
class Hold:
    migration_id: str
    phase: str
    table: str


def normalise(table: str) -> str:
    """``products`` and ``public.products`` are one table; names compared in lower case, as unquoted."""
    name = table.strip().lower()
    return name if "." in name else f"public.{name}"


def _ensure(conn: psycopg.Connection, schema: str) -> None:
    found = conn.execute("SELECT to_regclass(%s)", (f"{schema}.{TABLE}",)).fetchone()
    if found and found[0]:
        return
    with conn.transaction():
        xact_lock(conn, LEDGER_LOCK)
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (migration_id text NOT NULL, table_name text NOT NULL, "
                "claimed_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (migration_id, table_name))"
            ).format(sql.Identifier(schema, TABLE))
        )


def held(conn: psycopg.Connection, schema: str, *, exclude: str | None = None) -> list[Hold]:
    """Every table held by a migration in flight (other than ``exclude``), by migration."""
    found = conn.execute("SELECT to_regclass(%s)", (f"{schema}.{TABLE}",)).fetchone()
    if not found or not found[0]:
        return []
    rows = conn.execute(
        sql.SQL(
            "SELECT h.migration_id, m.phase, h.table_name FROM {h} h JOIN {m} m ON m.id = h.migration_id "
            "WHERE m.phase = ANY(%s) AND h.migration_id IS DISTINCT FROM %s ORDER BY 1, 3"
        ).format(h=sql.Identifier(schema, TABLE), m=sql.Identifier(schema, "migrations")),
        (list(HOLDING_PHASES), exclude),
    ).fetchall()
    return [Hold(str(r[0]), str(r[1]), str(r[2])) for r in rows]


def claim(conn: psycopg.Connection, schema: str, migration_id: str, tables: Iterable[str]) -> None:
    """Record that ``migration_id`` holds ``tables``; :class:`TableHeldError` naming the other migration
    and its phase when one of them is held already. The ledger's tables must exist."""
    wanted = sorted({normalise(t) for t in tables})
    _ensure(conn, schema)
    with conn.transaction():
        xact_lock(conn, HOLDS_LOCK)
        clashes = [h for h in held(conn, schema, exclude=migration_id) if h.table in wanted]
        if clashes:
            listing = "; ".join(
                f"{h.table} is held by migration {h.migration_id} (phase {h.phase})" for h in clashes
            )
            raise TableHeldError(
                f"migration {migration_id} cannot begin: {listing}. Wait until it completes or is rolled back "
                "(airflow-expand status lists the migrations in flight)"
            )
        table = sql.Identifier(schema, TABLE)
        conn.execute(sql.SQL("DELETE FROM {} WHERE migration_id = %s").format(table), (migration_id,))
        for name in wanted:
            conn.execute(
                sql.SQL("INSERT INTO {} (migration_id, table_name) VALUES (%s, %s)").format(table),
                (migration_id, name),
            )


def in_flight(conn: psycopg.Connection, schema: str) -> dict[tuple[str, str], Sequence[str]]:
    """``(migration id, phase) -> tables held``, for ``airflow-expand status``."""
    out: dict[tuple[str, str], list[str]] = {}
    for hold in held(conn, schema):
        out.setdefault((hold.migration_id, hold.phase), []).append(hold.table)
    return dict(out)
