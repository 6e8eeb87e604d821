"""A PostgreSQL advisory lock per migration, so two schedulers can never run the same DDL at once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import psycopg

from airflow_provider_expand.engine.errors import ConcurrencyConflictError

LOCK_NAMESPACE = "airflow_expand:"
LEDGER_LOCK = "airflow_expand:ledger"  # serialises creating the ledger's tables
# How long a step waits for a shared lock another step holds (planning ranges, creating the ledger)
# before it gives up as a transient failure; the session's lock_timeout does not apply to the wait.
SHARED_LOCK_WAIT = timedelta(minutes=10)


class MigrationLockedError(ConcurrencyConflictError):
    """Another session holds the lock of this migration: transient (a killed worker's backend lets go,
    another run ends), so the retry policy tries again later."""


def _holder_pid(conn: psycopg.Connection, migration_id: str) -> int | None:
    row = conn.execute(
        """
        SELECT l.pid FROM pg_locks l
         WHERE l.locktype = 'advisory' AND l.granted
           AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended(%s, 0)
         LIMIT 1
        """,
        (LOCK_NAMESPACE + migration_id,),
    ).fetchone()
    return int(row[0]) if row else None


@contextmanager
def migration_lock(
    conn: psycopg.Connection, migration_id: str, *, wait_seconds: float = 0.0, poll: float = 0.5
) -> Iterator[None]:
    """Hold the session-level advisory lock of ``migration_id`` on ``conn`` for the block.

    Waits up to ``wait_seconds`` for another holder to finish, then raises
    :class:`MigrationLockedError` naming the holder's pid.
    """
    key = LOCK_NAMESPACE + migration_id
    deadline = time.monotonic() + wait_seconds
    while True:
        row = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,)).fetchone()
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.commit()
        if row and row[0]:
            break
        if time.monotonic() >= deadline:
            holder = _holder_pid(conn, migration_id)
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
            conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))
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
