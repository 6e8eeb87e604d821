"""Every advisory lock the engine takes, and the one place its keys are made.

A key is ``airflow_expand:<kind>:<parts>``; each kind has its own constructor below, so a migration's
key (``migration:<id>``) can never equal the ledger's (``ledger:create``), a partition's, a range plan's
or an index's, whatever the migration id is. Session locks (a migration's DDL, a backfill partition, an
index build) are held for a block; transaction locks (creating the ledger, planning ranges) for the
caller's transaction.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import psycopg

from airflow_provider_expand.engine.errors import ConcurrencyConflictError

LOCK_NAMESPACE = "airflow_expand"
# How long a step waits for a shared lock another step holds (planning ranges, creating the ledger)
# before it gives up as a transient failure; the session's lock_timeout does not apply to the wait.
SHARED_LOCK_WAIT = timedelta(minutes=10)


def lock_key(kind: str, *parts: str) -> str:
    """``airflow_expand:<kind>:<part>:...``: the kind comes first, so keys of two kinds never meet."""
    return ":".join((LOCK_NAMESPACE, kind, *parts))


def migration_key(migration_id: str) -> str:
    """The lock of one migration's DDL: two schedulers never run the same phase at once."""
    return lock_key("migration", migration_id)


def partition_key(migration_id: str, step: str, partition: int) -> str:
    """The lock of one backfill partition: one session walks it at a time."""
    return lock_key("partition", migration_id, step, str(partition))


def ranges_key(migration_id: str, step: str) -> str:
    """The lock under which a backfill step's partitions plan their key ranges, one after the other."""
    return lock_key("ranges", migration_id, step)


def index_key(qualified_index: str) -> str:
    """The lock of one index (``schema.name``): two runs never build or drop it at once."""
    return lock_key("index", qualified_index)


LEDGER_LOCK = lock_key("ledger", "create")  # serialises creating the ledger's tables
HOLDS_LOCK = lock_key("holds", "claim")  # serialises migrations claiming the tables they touch (begin)


def try_session_lock(conn: psycopg.Connection, key: str) -> bool:
    """``pg_try_advisory_lock`` on ``key``: True when this session now holds it."""
    row = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,)).fetchone()
    return bool(row and row[0])


def session_unlock(conn: psycopg.Connection, key: str) -> None:
    """Let go of the session lock ``key``."""
    conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))


class MigrationLockedError(ConcurrencyConflictError):
    """Another session holds the lock of this migration: transient (a killed worker's backend lets go,
    another run ends), so the retry policy tries again later."""


def _holder_pid(conn: psycopg.Connection, key: str) -> int | None:
    row = conn.execute(
        """
        SELECT l.pid FROM pg_locks l
         WHERE l.locktype = 'advisory' AND l.granted
           AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended(%s, 0)
         LIMIT 1
        """,
        (key,),
    ).fetchone()
    return int(row[0]) if row else None


@contextmanager
def migration_lock(
    conn: psycopg.Connection,
    migration_id: str,
    *,
    wait_seconds: float = 0.0,
    poll: float = 0.5,
    key: str | None = None,
) -> Iterator[None]:
    """Hold the session-level advisory lock of ``migration_id`` on ``conn`` for the block.

    Waits up to ``wait_seconds`` for another holder to finish, then raises
    :class:`MigrationLockedError` naming the holder's pid. ``key`` (a :func:`partition_key`) locks a
    part of the migration instead of all of it.
    """
    key = key or migration_key(migration_id)
    deadline = time.monotonic() + wait_seconds
    while True:
        held = try_session_lock(conn, key)
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.commit()
        if held:
            break
        if time.monotonic() >= deadline:
            holder = _holder_pid(conn, key)
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.commit()
            raise MigrationLockedError(
                f"migration {migration_id!r} is locked by another session (backend pid {holder}); "
                "is another run of it active?"
            )
        time.sleep(poll)
    try:
        yield
    finally:
        if not conn.closed:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.rollback()
            session_unlock(conn, key)
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.commit()


def xact_lock(
    conn: psycopg.Connection, key: str, *, wait: timedelta = SHARED_LOCK_WAIT, poll: float = 0.1
) -> None:
    """Take the transaction-level advisory lock ``key`` in the caller's transaction, waiting up to ``wait``.

    Polled with ``pg_try_advisory_xact_lock``, so a wait neither aborts the transaction (as a
    ``lock_timeout`` would) nor idles it; raises :class:`ConcurrencyConflictError` (transient) after ``wait``.
    """
    deadline = time.monotonic() + wait.total_seconds()
    while True:
        row = conn.execute("SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))", (key,)).fetchone()
        if row and row[0]:
            return
        if time.monotonic() >= deadline:
            raise ConcurrencyConflictError(
                f"advisory lock {key!r} still held by another session after {wait.total_seconds():g} s; "
                "the step is retried later",
                "55P03",
            )
        time.sleep(poll)
