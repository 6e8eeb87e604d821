"""Key ranges of a partitioned backfill: planned once, stored beside the ledger, shared by every partition.

Partitions run as separate tasks that start at different times; if each computed its own bounds from
``min``/``max`` while the application inserts, neighbouring ranges could overlap or leave a gap. So the
first partition to start plans all ranges (quantiles of the key) under an advisory lock of the step (its
siblings wait their turn, polling, not under ``lock_timeout``) and stores them
in ``<ledger schema>.backfill_ranges``; the others, and every retry, read them back. The first range is
open below and the last open above, so together they always cover the whole key space exactly once.
Bounds are keys of any type and arity (``Target.encode``: a composite key is stored as a JSON array).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import psycopg
from psycopg import sql

from airflow_provider_expand.engine.backfill.key import Key, show_key
from airflow_provider_expand.engine.backfill.plan import BackfillError, Target
from airflow_provider_expand.engine.ledger.lock import LEDGER_LOCK, SHARED_LOCK_WAIT, ranges_key, xact_lock
from airflow_provider_expand.engine.ledger.store import Ledger, StepRecord

# Above this many rows (pg_class.reltuples) the quantiles come from a TABLESAMPLE of about SAMPLE_ROWS rows.
SAMPLE_ABOVE = 200_000
SAMPLE_ROWS = 100_000

_DDL = """
CREATE TABLE IF NOT EXISTS {t} (
    migration_id text NOT NULL,
    step text NOT NULL,
    part int NOT NULL,
    partitions int NOT NULL,
    lower_key text,
    upper_key text,
    empty boolean NOT NULL DEFAULT false,
    planned_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (migration_id, step, part)
)
"""


@dataclass(frozen=True)
class KeyRange:
    """Keys ``lower < key <= upper`` (compared as rows); ``None`` is unbounded on that side."""

    lower: Key | None
    upper: Key | None
    empty: bool = False

    def describe(self) -> str:
        if self.empty:
            return "(empty)"
        lower = show_key(self.lower) if self.lower is not None else "-inf"
        upper = show_key(self.upper) if self.upper is not None else "+inf"
        return f"({lower}, {upper}]"


def compute_ranges(conn: psycopg.Connection, target: Target, partitions: int) -> list[KeyRange]:
    """Split the key space into ``partitions`` ranges of about equal row counts (key quantiles).

    The quantiles are the keys at ranks ``ceil(f * n)`` of the keys in order (``percentile_disc``'s
    choice), read with ``row_number()`` so that they work for a key of any type and any number of
    columns; a large plain table is ranked on a ``TABLESAMPLE`` of about SAMPLE_ROWS rows.
    """
    if partitions == 1:
        return [KeyRange(None, None)]
    fractions = [i / partitions for i in range(1, partitions)]
    sampled = target.by_ctid and target.reltuples > SAMPLE_ABOVE
    bounds: list[Key] = []
    for use_sample in (True, False) if sampled else (False,):
        sample = sql.SQL(" TABLESAMPLE SYSTEM (%(pct)s)") if use_sample else sql.SQL("")
        rows = conn.execute(
            sql.SQL(
                "SELECT {texts} FROM (SELECT {aliased}, row_number() OVER (ORDER BY {order}) AS _rank,"
                " count(*) OVER () AS _rows FROM {t}{s}) s"
                " JOIN unnest(%(f)s::float8[]) WITH ORDINALITY AS q(fraction, ord)"
                " ON s._rank = greatest(1, ceil(q.fraction * s._rows)) ORDER BY q.ord"
            ).format(
                texts=target.texts("s"),
                aliased=target.aliased(),
                order=target.order(),
                t=target.table,
                s=sample,
            ),
            {"f": fractions, "pct": min(100.0, max(0.01, 100.0 * SAMPLE_ROWS / max(target.reltuples, 1.0)))},
        ).fetchall()
        if rows:  # one per fraction; two can meet at the same key (few rows): that range is empty, rightly
            bounds = [tuple(str(v) for v in r) for r in rows]
            break
    if not bounds:  # an empty table: the first range takes everything that appears later
        return [KeyRange(None, None)] + [KeyRange(None, None, empty=True)] * (partitions - 1)
    edges: list[Key | None] = [None, *bounds, None]
    return [KeyRange(edges[i], edges[i + 1]) for i in range(partitions)]


def _ranges_table(ledger: Ledger) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(ledger.schema), sql.Identifier("backfill_ranges"))


def _ranges_table_exists(conn: psycopg.Connection, ledger: Ledger) -> bool:
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (_ranges_table(ledger).as_string(conn),)
    ).fetchone()
    return bool(row and row[0])


def _stored(
    conn: psycopg.Connection, ledger: Ledger, target: Target, migration_id: str, step: str
) -> list[tuple[int, int, KeyRange]]:
    rows = conn.execute(
        sql.SQL(
            "SELECT part, partitions, lower_key, upper_key, empty FROM {} WHERE migration_id = %s AND step = %s"
            " ORDER BY part"
        ).format(_ranges_table(ledger)),
        (migration_id, step),
    ).fetchall()
    return [
        (int(r[0]), int(r[1]), KeyRange(target.decode(r[2]), target.decode(r[3]), bool(r[4]))) for r in rows
    ]


def _matches(stored: list[tuple[int, int, KeyRange]], partitions: int) -> bool:
    return [p for p, _, _ in stored] == list(range(partitions)) and all(n == partitions for _, n, _ in stored)


def claim_range(
    conn: psycopg.Connection,
    ledger: Ledger,
    target: Target,
    *,
    migration_id: str,
    step: str,
    part: int,
    partitions: int,
    batch_size: int,
    lock_wait: timedelta = SHARED_LOCK_WAIT,
) -> tuple[KeyRange, StepRecord]:
    """This partition's range (planning all of them on first use) and its step, marked running.

    A plan is reused while any partition of the step has a ledger row; after a reset (no rows) the ranges
    are planned afresh. Changing ``partitions`` mid-backfill is refused while a partition is running.
    Waits up to ``lock_wait`` for a sibling partition that is planning.
    """
    ledger.ensure(conn, lock_wait=lock_wait)
    table = _ranges_table(ledger)
    if not _ranges_table_exists(conn, ledger):
        with conn.transaction():
            xact_lock(conn, LEDGER_LOCK, wait=lock_wait)
            conn.execute(sql.SQL(_DDL).format(t=table))
    with conn.transaction():
        # Only this step's partitions plan together; they wait their turn, whatever lock_timeout says.
        xact_lock(conn, ranges_key(migration_id, step), wait=lock_wait)
        stored = _stored(conn, ledger, target, migration_id, step)
        parts = {s.part: s.status for s in ledger.steps(conn, migration_id) if s.step == step}
        if parts and _matches(stored, partitions):
            ranges = [r for _, _, r in stored]
        else:
            running = sorted(p for p, status in parts.items() if status == "running")
            if running:
                before = stored[0][1] if stored else "another number of"
                raise BackfillError(
                    f"{step} of migration {migration_id!r} was started with {before} partitions and part(s) "
                    f"{running} are still marked running; it cannot switch to {partitions} partitions "
                    "midway: finish it with the old number, or reset the migration"
                )
            ranges = compute_ranges(conn, target, partitions)
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE migration_id = %s AND step = %s").format(table),
                (migration_id, step),
            )
            conn.execute(
                sql.SQL("DELETE FROM {}.steps WHERE migration_id = %s AND step = %s").format(
                    sql.Identifier(ledger.schema)
                ),
                (migration_id, step),
            )
            with conn.cursor() as cur:
                cur.executemany(
                    sql.SQL(
                        "INSERT INTO {} (migration_id, step, part, partitions, lower_key, upper_key, empty)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s)"
                    ).format(table),
                    [
                        (
                            migration_id,
                            step,
                            i,
                            partitions,
                            target.encode(r.lower),
                            target.encode(r.upper),
                            r.empty,
                        )
                        for i, r in enumerate(ranges)
                    ],
                )
        record = ledger.start_step(conn, migration_id, step, part, batch_size=batch_size)
    return ranges[part], record


def peek_range(
    conn: psycopg.Connection,
    ledger: Ledger,
    target: Target,
    *,
    migration_id: str,
    step: str,
    part: int,
    partitions: int,
) -> KeyRange:
    """The range a run would use, without writing anything (for ``dry_run``)."""
    if _ranges_table_exists(conn, ledger):
        stored = _stored(conn, ledger, target, migration_id, step)
        if _matches(stored, partitions):
            return stored[part][2]
    return compute_ranges(conn, target, partitions)[part]
