"""Run one ``CONCURRENTLY`` statement safely: autocommit, a bounded table-lock wait, retries with backoff.

The statement itself runs with ``lock_timeout = 0`` and a :class:`StatementMonitor` on a second
connection cancels it when its wait for a *relation* lock reaches ``lock_timeout`` (see
``index.progress`` for why PostgreSQL's own ``lock_timeout`` cannot be used here). Each such give-up is
retried after an exponential backoff with jitter, up to ``retries`` times, like SQLSTATE 55P03 elsewhere.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

import psycopg
from psycopg import sql

from airflow_provider_expand.engine.database import backend_pid
from airflow_provider_expand.engine.ddl.retry import LockRetriesExhaustedError, LockRetryPolicy
from airflow_provider_expand.engine.index.progress import StatementMonitor

T = TypeVar("T")


def _exhausted(
    label: str, tries: int, lock_timeout: timedelta, blockers: str = ""
) -> LockRetriesExhaustedError:
    """The statement never got its lock within ``lock_timeout``, on any try (SQLSTATE 55P03)."""
    held = f"; held by {blockers}" if blockers else ""
    return LockRetriesExhaustedError(
        f"{label}: no lock within lock_timeout {lock_timeout.total_seconds():g} s on any of "
        f"{tries} tries{held}; retry when the blocking transaction has ended",
        tries=tries,
    )


def _wait_before_retry(policy: LockRetryPolicy, attempt: int, label: str, log: logging.Logger) -> None:
    """Log the lock wait that try ``attempt`` (from 0) lost, and back off before the next."""
    delay = policy.backoff(attempt + 1).total_seconds()
    log.warning(
        "%s: lock not granted within %.1f s (try %d of %d); retrying in %.2f s",
        label,
        policy.lock_timeout.total_seconds(),
        attempt + 1,
        policy.retries + 1,
        delay,
    )
    time.sleep(delay)


def set_lock_timeout(conn: psycopg.Connection, timeout: timedelta) -> None:
    """``SET lock_timeout`` for the session (0 disables it); SET cannot take a bound parameter."""
    ms = max(int(timeout.total_seconds() * 1000), 0)
    conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{ms}ms")))


def retry_on_lock_timeout(
    action: Callable[[], T], *, label: str, policy: LockRetryPolicy, log: logging.Logger
) -> T:
    """Call ``action`` (which runs under the session's ``lock_timeout``), retrying on SQLSTATE 55P03."""
    for attempt in range(policy.retries + 1):
        try:
            return action()
        except psycopg.errors.LockNotAvailable as exc:
            if attempt == policy.retries:
                raise _exhausted(label, attempt + 1, policy.lock_timeout) from exc
            _wait_before_retry(policy, attempt, label, log)
    raise AssertionError("unreachable")


def run_concurrently(
    conn: psycopg.Connection,
    monitor_conn: psycopg.Connection,
    statement: sql.SQL | sql.Composed,
    *,
    label: str,
    policy: LockRetryPolicy,
    progress_interval: timedelta,
    log: logging.Logger,
    before_retry: Callable[[], None] | None = None,
) -> StatementMonitor:
    """Run ``statement`` on autocommit ``conn``, watched from ``monitor_conn``; return the last monitor.

    ``before_retry`` runs after a try was cancelled for its lock (e.g. to drop what it left behind).
    Any other error propagates unchanged for the caller to judge.
    """
    if not conn.autocommit:
        raise ValueError(f"{label}: CONCURRENTLY statements need an autocommit connection")
    pid = backend_pid(conn)
    for attempt in range(policy.retries + 1):
        monitor = StatementMonitor(
            monitor_conn,
            pid,
            label=label,
            lock_timeout=policy.lock_timeout,
            progress_interval=progress_interval,
            log=log,
        )
        set_lock_timeout(conn, timedelta(0))
        try:
            with monitor:
                conn.execute(statement)
            return monitor
        except (psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable) as exc:
            if isinstance(exc, psycopg.errors.QueryCanceled) and not monitor.cancelled_for_lock:
                raise
            if before_retry is not None:
                before_retry()
            if attempt == policy.retries:
                raise _exhausted(label, attempt + 1, policy.lock_timeout, monitor.blockers) from exc
            _wait_before_retry(policy, attempt, label, log)
        finally:
            if not conn.closed and not conn.broken:
                set_lock_timeout(conn, policy.lock_timeout)
    raise AssertionError("unreachable")
