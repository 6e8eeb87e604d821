"""The invariants every cell of the fault matrix checks after a run: whatever failed, the database and the
queues are in one of the states the migration's life allows, and no data was lost.

Each check returns findings (strings) instead of asserting, so the matrix can show what a cell broke.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field

import psycopg
import redis

from airflow_provider_expand.engine.backup.pg_tools import PgTarget, client_env, resolve_tool
from airflow_provider_expand.engine.queues.pause import MARKER_SUFFIX
from tests.dags.harness import Writer

LEDGER_SCHEMA = "airflow_expand"

# The ledger phases that agree with each shape of the schema (see docs/failure-matrix.md).
PHASES_FOR_SCHEMA: dict[str, frozenset[str]] = {
    "pre": frozenset({"pending", "rolled_back"}),
    # contracting: the contract began but its first group did not commit (forward-only from here)
    "expand": frozenset({"expanded", "deployed", "backfilled", "soaking", "failed", "contracting"}),
    "contract": frozenset({"completed", "contracting"}),
}
# "expand+index" is the expand shape with the spec's index built: the same phases as "expand".
SHAPE_NAMES = {"pre": "pre", "expand": "expand", "expand+index": "expand", "contract": "contract"}


def schema_dump(dsn: str) -> str:
    """``pg_dump --schema-only`` of the database without the ledger, without comments, SETs or blanks."""
    target = PgTarget.from_dsn(dsn)
    with psycopg.connect(dsn) as conn:
        major = int(conn.info.server_version) // 10000
    pg_dump = resolve_tool("pg_dump", server_major=major)
    with client_env(target) as env:
        out = subprocess.run(
            [str(pg_dump), "--schema-only", "--no-owner", f"--exclude-schema={LEDGER_SCHEMA}"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    skipped = ("--", "SET ", "SELECT pg_catalog.set_config", "\\restrict", "\\unrestrict")
    return "\n".join(line for line in out.splitlines() if line.strip() and not line.startswith(skipped))


@dataclass
class Verdict:
    """What the checker found: the schema's shape (or None), the ledger phase, and every violation."""

    shape: str | None
    phase: str | None
    findings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        head = f"schema {self.shape or 'UNKNOWN'}, phase {self.phase or '-'}"
        return head + ("" if self.ok else ": " + "; ".join(self.findings))


def check_invariants(
    dsn: str,
    references: dict[str, str],
    migration_id: str,
    writer: Writer,
    redis_client: redis.Redis | None,
    prefix: str | None,
    *,
    expect_shape: Iterable[str] | None = None,
) -> Verdict:
    """All the matrix's invariants on the database at ``dsn`` (and the queues under ``prefix``)."""
    dump = schema_dump(dsn)
    shape = next((name for name, ref in references.items() if ref == dump), None)
    with psycopg.connect(dsn, autocommit=True) as conn:
        phase = _phase(conn, migration_id)
        verdict = Verdict(shape, phase)
        if shape is None:
            verdict.findings.append("schema is none of pre/expand/expand+index/contract")
        elif expect_shape is not None and shape not in set(expect_shape):
            verdict.findings.append(f"schema is {shape}, expected {'/'.join(expect_shape)}")
        if shape is not None:
            allowed = PHASES_FOR_SCHEMA[SHAPE_NAMES[shape]]
            if (phase or "pending") not in allowed:
                verdict.findings.append(f"ledger phase {phase} disagrees with the {shape} schema")
        # before the backfill finished, a NULL name is a row it has not reached yet (not a wrong one)
        verdict.findings += _rows(conn, writer, null_name_ok=SHAPE_NAMES.get(shape or "") == "expand")
        verdict.findings += _invalid_indexes(conn)
        verdict.findings += _rollback_after_contract(conn, migration_id)
    if redis_client is not None and prefix is not None:
        verdict.findings += _queues(redis_client, prefix)
    return verdict


def _phase(conn: psycopg.Connection, migration_id: str) -> str | None:
    if conn.execute("SELECT to_regclass(%s)", (f"{LEDGER_SCHEMA}.migrations",)).fetchone() == (None,):
        return None
    row = conn.execute(
        f"SELECT phase FROM {LEDGER_SCHEMA}.migrations WHERE id = %s", (migration_id,)
    ).fetchone()
    return str(row[0]) if row else None


def _rows(conn: psycopg.Connection, writer: Writer, *, null_name_ok: bool) -> list[str]:
    """Every product's current title/name is the writer's last committed value, or the seed's; none lost."""
    columns = {
        r[0]
        for r in conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = 'public' AND table_name = 'products'"
        )
    }
    found: list[str] = []
    expected_count = writer.max_id + sum(1 for k in writer.expected if k > writer.max_id)
    values: dict[str, dict[int, str | None]] = {}
    for column in ("name", "title"):
        if column in columns:
            values[column] = dict(conn.execute(f"SELECT id, {column} FROM products").fetchall())
    count = len(next(iter(values.values()), {}))
    if count != expected_count:
        found.append(f"{count} products, expected {expected_count}")
    for column, rows in values.items():
        wrong = [
            i
            for i, v in rows.items()
            if v != writer.expected.get(i, f"Product {i}")
            and not (v is None and null_name_ok and column == "name")
        ]
        if wrong:
            found.append(f"{len(wrong)} rows with a wrong {column} (e.g. id {sorted(wrong)[:3]})")
    if writer.errors:
        found.append(f"the writer saw {len(writer.errors)} errors, e.g. {writer.errors[0][:120]}")
    return found


def _invalid_indexes(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE NOT i.indisvalid AND n.nspname NOT IN ('pg_catalog', 'pg_toast')"
    ).fetchall()
    return [f"invalid index {r[0]}" for r in rows]


def _rollback_after_contract(conn: psycopg.Connection, migration_id: str) -> list[str]:
    """``rollback.sql`` must never start once the contract began (forward-only): the rollback step's start
    against the contract step's (and the ledger's ``contract_started_at`` where the ledger has it)."""
    if conn.execute("SELECT to_regclass(%s)", (f"{LEDGER_SCHEMA}.steps",)).fetchone() == (None,):
        return []
    has_column = conn.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = %s AND table_name = 'migrations'"
        " AND column_name = 'contract_started_at'",
        (LEDGER_SCHEMA,),
    ).fetchone()
    ledger_start = (
        f"(SELECT contract_started_at FROM {LEDGER_SCHEMA}.migrations WHERE id = %(id)s)"
        if has_column
        else "NULL"
    )
    row = conn.execute(
        f"SELECT r.started_at, b.began FROM {LEDGER_SCHEMA}.steps r,"
        f" (SELECT least((SELECT min(started_at) FROM {LEDGER_SCHEMA}.steps"
        f"   WHERE migration_id = %(id)s AND step = 'contract'), {ledger_start}) AS began) b"
        " WHERE r.migration_id = %(id)s AND r.step = 'rollback' AND r.started_at > b.began",
        {"id": migration_id},
    ).fetchone()
    return [f"rollback started at {row[0]} after the contract began at {row[1]}"] if row else []


def _queues(client: redis.Redis, prefix: str) -> list[str]:
    """No queue under ``prefix`` left paused, and no paused-by marker of ours left behind."""
    found: list[str] = []
    for key in client.scan_iter(match=f"{prefix}:*:meta"):
        if client.hexists(key, "paused"):
            found.append(f"{key.decode()} is paused")
    for key in client.scan_iter(match=f"{prefix}:*airflow-expand*"):
        name = key.decode()
        found.append(f"marker {name} left" if name.endswith(MARKER_SUFFIX) else f"key {name} left")
    return found
