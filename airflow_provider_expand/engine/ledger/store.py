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

from airflow_provider_expand.engine.errors import DefinitiveError
from airflow_provider_expand.engine.ledger.lock import LEDGER_LOCK, SHARED_LOCK_WAIT, xact_lock
from airflow_provider_expand.engine.redact import redact_url

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


class LedgerVersionError(DefinitiveError):
    """The ledger was written by a newer release than this one."""


StepStatus = Literal["running", "success", "failed", "skipped"]

# The ledger's own schema version; :meth:`Ledger.ensure` upgrades an older ledger in place.
LEDGER_VERSION = 3

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
CREATE TABLE IF NOT EXISTS {schema}.ledger_version (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    version int NOT NULL
);
"""

# version -> the statements that bring a ledger of the version before it up to it. Version 1 (the first
# release) had no ledger_version table and no contract_started_at: a contract that started there shows as
# phase contracting/completed, or as failed with a contract step (the first release overwrote the phase).
_UPGRADES: dict[int, str] = {
    2: """
ALTER TABLE {schema}.migrations ADD COLUMN IF NOT EXISTS contract_started_at timestamptz;
UPDATE {schema}.migrations m SET contract_started_at = coalesce(
        (SELECT min(s.started_at) FROM {schema}.steps s WHERE s.migration_id = m.id AND s.step = 'contract'),
        m.soaked_at, m.updated_at)
 WHERE m.contract_started_at IS NULL
   AND (m.phase IN ('contracting', 'completed')
        OR EXISTS (SELECT 1 FROM {schema}.steps s WHERE s.migration_id = m.id AND s.step = 'contract'));
UPDATE {schema}.migrations m SET phase = 'contracting'
 WHERE m.phase = 'failed' AND m.contract_started_at IS NOT NULL;
""",
    # who decided what, and when (the contract approval's answers): engine/ledger/decisions.py
    3: """
CREATE TABLE IF NOT EXISTS {schema}.decisions (
    migration_id text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind text NOT NULL,
    choice text NOT NULL,
    actor text NOT NULL,
    detail text,
    run_id text
);
CREATE INDEX IF NOT EXISTS decisions_migration ON {schema}.decisions (migration_id, at);
""",
}

# The moments a migration's row records, in the order they happen (``airflow-expand status`` prints them).
STAMP_COLUMNS = (
    "expanded_at",
    "deployed_at",
    "backfilled_at",
    "soaked_at",
    "contract_started_at",
    "contracted_at",
    "rolled_back_at",
)


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
    contract_started_at: dt.datetime | None = None


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
        """Create the ledger, or upgrade an older one in place; free when it is current (no lock taken)."""
        if self.version(conn) == LEDGER_VERSION:
            return
        schema = sql.Identifier(self.schema)
        with conn.transaction():
            # serialised, so parallel first uses (backfill partitions) do not race; a wait for another
            # step creating it is polled (up to lock_wait), so the session's lock_timeout does not fail it
            xact_lock(conn, LEDGER_LOCK, wait=lock_wait)
            found = self.version(conn)
            if found == LEDGER_VERSION:
                return
            if found is not None and found > LEDGER_VERSION:
                raise LedgerVersionError(
                    f"the ledger {self.schema} is at version {found}, newer than this release understands "
                    f"({LEDGER_VERSION}): upgrade airflow-provider-expand on every worker"
                )
            conn.execute(sql.SQL(_DDL).format(schema=schema))
            for version in range((found or 1) + 1, LEDGER_VERSION + 1):
                conn.execute(sql.SQL(_UPGRADES[version]).format(schema=schema))
            conn.execute(
                sql.SQL(
                    "INSERT INTO {}.ledger_version (version) VALUES (%(v)s)"
                    " ON CONFLICT (only_row) DO UPDATE SET version = %(v)s"
                ).format(schema),
                {"v": LEDGER_VERSION},
            )

    def version(self, conn: psycopg.Connection) -> int | None:
        """The ledger's schema version: None when absent, 1 for a first-release ledger (no version table)."""
        row = conn.execute(
            "SELECT to_regclass(%s), to_regclass(%s)",
            (f'"{self.schema}".migrations', f'"{self.schema}".ledger_version'),
        ).fetchone()
        if not row or row[0] is None:
            return None
        if row[1] is None:
            return 1
        found = conn.execute(
            sql.SQL("SELECT max(version) FROM {}.ledger_version").format(sql.Identifier(self.schema))
        ).fetchone()
        return int(found[0]) if found and found[0] is not None else 1

    def installed(self, conn: psycopg.Connection) -> bool:
        """Whether the ledger tables exist (a dry run must not create them)."""
        row = conn.execute("SELECT to_regclass(%s)", (f'"{self.schema}".migrations',)).fetchone()
        return bool(row and row[0])

    # -- migrations ---------------------------------------------------------------------------

    def get(
        self, conn: psycopg.Connection, migration_id: str, *, for_update: bool = False
    ) -> MigrationRecord | None:
        lock = sql.SQL(" FOR UPDATE") if for_update else sql.SQL("")
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                sql.SQL("SELECT * FROM {} WHERE id = %s{}").format(self._t("migrations"), lock),
                (migration_id,),
            )
            row = cur.fetchone()
        return MigrationRecord(**row) if row else None

    def migrations(self, conn: psycopg.Connection) -> list[MigrationRecord]:
        """Every migration the ledger knows, most recently moved first (the UI's list)."""
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                sql.SQL("SELECT * FROM {} ORDER BY updated_at DESC, id").format(self._t("migrations"))
            )
            return [MigrationRecord(**r) for r in cur.fetchall()]

    def create(
        self, conn: psycopg.Connection, migration_id: str, *, dag_id: str | None, run_id: str | None
    ) -> None:
        """The migration's row in phase ``pending``, if it has none yet."""
        conn.execute(
            sql.SQL(
                "INSERT INTO {t} (id, dag_id, run_id, phase) VALUES (%(id)s, %(dag)s, %(run)s, 'pending')"
                " ON CONFLICT (id) DO NOTHING"
            ).format(t=self._t("migrations")),
            {"id": migration_id, "dag": dag_id, "run": run_id},
        )

    def write_phase(
        self,
        conn: psycopg.Connection,
        migration_id: str,
        phase: Phase | None,
        *,
        stamps: tuple[str, ...] = (),
        dag_id: str | None = None,
        run_id: str | None = None,
    ) -> None:
        """Write ``phase`` (None: keep it) and stamp ``stamps`` the first time. Only the lifecycle calls this,
        once it has checked the transition (``engine.lifecycle``)."""
        if phase is not None and phase not in PHASES:
            raise ValueError(f"unknown ledger phase {phase!r}; expected one of {', '.join(PHASES)}")
        t = self._t("migrations")
        sets = [
            sql.SQL(", {col} = coalesce({t}.{col}, now())").format(col=sql.Identifier(c), t=t) for c in stamps
        ]
        conn.execute(
            sql.SQL(
                "UPDATE {t} SET phase = coalesce(%(phase)s, phase), updated_at = now(),"
                " dag_id = coalesce(%(dag)s, dag_id), run_id = coalesce(%(run)s, run_id){stamps}"
                " WHERE id = %(id)s"
            ).format(t=t, stamps=sql.SQL("").join(sets)),
            {"id": migration_id, "phase": phase, "dag": dag_id, "run": run_id},
        )

    def reset(self, conn: psycopg.Connection, migration_id: str, *, run_id: str | None = None) -> None:
        """Start a migration over (after a rollback): clear its stamps and its step checkpoints."""
        with conn.transaction():
            conn.execute(
                sql.SQL(
                    "UPDATE {t} SET phase = 'pending', run_id = coalesce(%s, run_id), expanded_at = NULL,"
                    " deployed_at = NULL, backfilled_at = NULL, soaked_at = NULL, contract_started_at = NULL,"
                    " contracted_at = NULL,"
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

    def note_hold(
        self, conn: psycopg.Connection, migration_id: str, step: str, part: int, reason: str | None
    ) -> None:
        """Say in a running step's ``error`` what health gate holds it (None: released), so any reader of the
        ledger (the migration view, ``status``) sees the hold; between batches, in its own transaction."""
        with conn.transaction():
            conn.execute(
                sql.SQL(
                    "UPDATE {t} SET error = %(e)s"
                    " WHERE migration_id = %(m)s AND step = %(s)s AND part = %(p)s AND status = 'running'"
                ).format(t=self._t("steps")),
                {
                    "e": None if reason is None else f"holding: {reason}",
                    "m": migration_id,
                    "s": step,
                    "p": part,
                },
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
                # an error text may quote a URL: its credentials never reach the ledger
                {
                    "m": migration_id,
                    "s": step,
                    "p": part,
                    "st": status,
                    "e": error and redact_url(error),
                    "total": rows_total,
                },
            )
