"""The ledger in the target database: where each migration and each of its steps stands.

It lives next to the data it describes so that a batch and its checkpoint commit in one transaction,
and so that any scheduler (or the CLI) can tell where a migration stopped.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, get_args

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from .lock import LEDGER_LOCK, SHARED_LOCK_WAIT, xact_lock

DEFAULT_SCHEMA = "airflow_expand"

Phase = Literal[
    "pending",
    "expanding",
    "expanded",
    "deployed",
    "backfilled",
    "soaking",
    "contracting",
    "completed",
    "rolling_back",
    "rolled_back",
    "failed",
]
PHASES: tuple[str, ...] = get_args(Phase)

StepStatus = Literal["running", "success", "failed", "skipped"]

# Entering one of these phases stamps the matching column (first time only, so a retry keeps it).
PHASE_STAMPS: dict[str, str] = {
    "expanded": "expanded_at",
    "deployed": "deployed_at",
    "backfilled": "backfilled_at",
    "contracting": "soaked_at",
    "completed": "contracted_at",
    "rolled_back": "rolled_back_at",
}

_DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.migrations (
    id text PRIMARY KEY,
    dag_id text,
    run_id text,
    phase text NOT NULL DEFAULT 'pending',
    expanded_at timestamptz,
    deployed_at timestamptz,
    backfilled_at timestamptz,
    soaked_at timestamptz,
    contracted_at timestamptz,
    rolled_back_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {schema}.steps (
    migration_id text NOT NULL,
    step text NOT NULL,
    part int NOT NULL DEFAULT 0,
    status text NOT NULL,
    started_at timestamptz,
    finished_at timestamptz,
    rows_done bigint NOT NULL DEFAULT 0,
    rows_total bigint,
    last_key text,
    batch_size int,
    error text,
    PRIMARY KEY (migration_id, step, part)
);
"""


@dataclass(frozen=True)
class MigrationRecord:
    """One row of ``migrations``."""

    id: str
    dag_id: str | None
    run_id: str | None
    phase: str
    expanded_at: dt.datetime | None
    deployed_at: dt.datetime | None
    backfilled_at: dt.datetime | None
    soaked_at: dt.datetime | None
    contracted_at: dt.datetime | None
    rolled_back_at: dt.datetime | None
    updated_at: dt.datetime


@dataclass(frozen=True)
class StepRecord:
    """One row of ``steps``: a step (or one partition of a backfill) and its checkpoint."""

    migration_id: str
    step: str
    part: int
    status: str
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    rows_done: int
    rows_total: int | None
    last_key: str | None
    batch_size: int | None
    error: str | None


class Ledger:
    """Reads and writes the ledger tables in ``schema`` of the target database.

    Writers wrap themselves in ``conn.transaction()``: on an autocommit connection that is a transaction
    of its own, inside the caller's transaction a savepoint. Readers run in whatever the caller has.
    """

    def __init__(self, schema: str = DEFAULT_SCHEMA) -> None:
        self.schema = schema

    def _t(self, table: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(table))

    def ensure(self, conn: psycopg.Connection, *, lock_wait: timedelta = SHARED_LOCK_WAIT) -> None:
        """Create the schema and tables if missing: a catalog lookup when they exist (every step calls
        this), the shared ledger lock only to create them, so parallel first uses do not race."""
        if self._tables_exist(conn):
            return
        with conn.transaction():
            xact_lock(conn, LEDGER_LOCK, wait=lock_wait)
            conn.execute(sql.SQL(_DDL).format(schema=sql.Identifier(self.schema)))

    def _tables_exist(self, conn: psycopg.Connection) -> bool:
        row = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL",
            (self._t("migrations").as_string(conn), self._t("steps").as_string(conn)),
        ).fetchone()
        return bool(row and row[0])

    def installed(self, conn: psycopg.Connection) -> bool:
        """Whether the ledger tables exist (a dry run must not create them)."""
        row = conn.execute("SELECT to_regclass(%s)", (f'"{self.schema}".migrations',)).fetchone()
        return bool(row and row[0])

    # -- migrations ---------------------------------------------------------------------------

    def get(self, conn: psycopg.Connection, migration_id: str) -> MigrationRecord | None:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                sql.SQL("SELECT * FROM {} WHERE id = %s").format(self._t("migrations")), (migration_id,)
            )
            row = cur.fetchone()
        return MigrationRecord(**row) if row else None

    def set_phase(
        self,
        conn: psycopg.Connection,
        migration_id: str,
        phase: Phase,
        *,
        dag_id: str | None = None,
        run_id: str | None = None,
    ) -> None:
        """Move ``migration_id`` to ``phase`` (creating its row), stamping the phase's time column."""
        if phase not in PHASES:
            raise ValueError(f"unknown ledger phase {phase!r}; expected one of {', '.join(PHASES)}")
        stamp = PHASE_STAMPS.get(phase)
        stamp_sql: sql.Composable = sql.SQL("")
        if stamp:
            col = sql.Identifier(stamp)
            stamp_sql = sql.SQL(", {col} = coalesce({t}.{col}, now())").format(
                col=col, t=self._t("migrations")
            )
        with conn.transaction():
            conn.execute(
                sql.SQL(
                    "INSERT INTO {t} (id, dag_id, run_id, phase) VALUES (%(id)s, %(dag)s, %(run)s, 'pending')"
                    " ON CONFLICT (id) DO NOTHING"
                ).format(t=self._t("migrations")),
                {"id": migration_id, "dag": dag_id, "run": run_id},
            )
            conn.execute(
                sql.SQL(
                    "UPDATE {t} SET phase = %(phase)s, updated_at = now(),"
                    " dag_id = coalesce(%(dag)s, dag_id), run_id = coalesce(%(run)s, run_id){stamp}"
                    " WHERE id = %(id)s"
                ).format(t=self._t("migrations"), stamp=stamp_sql),
                {"id": migration_id, "phase": phase, "dag": dag_id, "run": run_id},
            )

    def reset(self, conn: psycopg.Connection, migration_id: str, *, run_id: str | None = None) -> None:
        """Start a migration over (after a rollback): clear its stamps and its step checkpoints."""
        with conn.transaction():
            conn.execute(
                sql.SQL(
                    "UPDATE {t} SET phase = 'pending', run_id = coalesce(%s, run_id), expanded_at = NULL,"
                    " deployed_at = NULL, backfilled_at = NULL, soaked_at = NULL, contracted_at = NULL,"
                    " updated_at = now() WHERE id = %s"
                ).format(t=self._t("migrations")),
                (run_id, migration_id),
            )
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE migration_id = %s").format(self._t("steps")), (migration_id,)
            )

    # -- steps --------------------------------------------------------------------------------

    def step(
        self, conn: psycopg.Connection, migration_id: str, step: str, part: int = 0
    ) -> StepRecord | None:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                sql.SQL("SELECT * FROM {} WHERE migration_id = %s AND step = %s AND part = %s").format(
                    self._t("steps")
                ),
                (migration_id, step, part),
            )
            row = cur.fetchone()
        return StepRecord(**row) if row else None

    def steps(self, conn: psycopg.Connection, migration_id: str) -> list[StepRecord]:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                sql.SQL(
                    "SELECT * FROM {} WHERE migration_id = %s ORDER BY started_at NULLS LAST, step, part"
                ).format(self._t("steps")),
                (migration_id,),
            )
            return [StepRecord(**r) for r in cur.fetchall()]

    def start_step(
        self,
        conn: psycopg.Connection,
        migration_id: str,
        step: str,
        part: int = 0,
        *,
        rows_total: int | None = None,
        batch_size: int | None = None,
    ) -> StepRecord:
        """Mark a step running, keeping an earlier checkpoint (``last_key``, ``rows_done``) to resume from."""
        with conn.transaction():
            conn.execute(
                sql.SQL(
                    "INSERT INTO {t} (migration_id, step, part, status, started_at, rows_total, batch_size)"
                    " VALUES (%(m)s, %(s)s, %(p)s, 'running', now(), %(total)s, %(bs)s)"
                    " ON CONFLICT (migration_id, step, part) DO UPDATE SET status = 'running',"
                    " started_at = coalesce({t}.started_at, now()), finished_at = NULL, error = NULL,"
                    " rows_total = coalesce(%(total)s, {t}.rows_total),"
                    " batch_size = coalesce(%(bs)s, {t}.batch_size)"
                ).format(t=self._t("steps")),
                {"m": migration_id, "s": step, "p": part, "total": rows_total, "bs": batch_size},
            )
        record = self.step(conn, migration_id, step, part)
        assert record is not None
        return record

    def checkpoint(
        self,
        cur: psycopg.Cursor[Any],
        migration_id: str,
        step: str,
        part: int,
        *,
        last_key: str | None,
        rows_added: int,
        batch_size: int | None = None,
    ) -> None:
        """Advance a step's checkpoint inside the caller's transaction (the batch's own)."""
        cur.execute(
            sql.SQL(
                "UPDATE {t} SET last_key = %(k)s, rows_done = rows_done + %(n)s,"
                " batch_size = coalesce(%(bs)s, batch_size)"
                " WHERE migration_id = %(m)s AND step = %(s)s AND part = %(p)s"
            ).format(t=self._t("steps")),
            {"k": last_key, "n": rows_added, "bs": batch_size, "m": migration_id, "s": step, "p": part},
        )

    def finish_step(
        self,
        conn: psycopg.Connection,
        migration_id: str,
        step: str,
        part: int = 0,
        *,
        status: StepStatus = "success",
        error: str | None = None,
        rows_total: int | None = None,
    ) -> None:
        with conn.transaction():
            conn.execute(
                sql.SQL(
                    "INSERT INTO {t} (migration_id, step, part, status, started_at, finished_at, error)"
                    " VALUES (%(m)s, %(s)s, %(p)s, %(st)s, now(), now(), %(e)s)"
                    " ON CONFLICT (migration_id, step, part) DO UPDATE SET status = %(st)s,"
                    " finished_at = now(), error = %(e)s, rows_total = coalesce(%(total)s, {t}.rows_total)"
                ).format(t=self._t("steps")),
                {"m": migration_id, "s": step, "p": part, "st": status, "e": error, "total": rows_total},
            )
