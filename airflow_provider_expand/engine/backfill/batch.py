"""One backfill transaction under the batch's own timeouts, and what its failures mean.

Every batch transaction sets ``statement_timeout`` (how long a batch may hold its row locks before the
engine splits it) and, below it, ``lock_timeout`` (a wait for a table lock is a conflict to retry, not a
slow batch to split). A short conflict is retried here a few times; past that, and for anything else the
server says, the driver error leaves as the engine's class for it (``errors.database_error``), so a lost
connection is transient and a ``set`` that raises is definitive, both naming the table.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from airflow_provider_expand.engine.errors import database_error

_T = TypeVar("_T")

CONFLICT_RETRIES = 5
LOCK_TIMEOUT_CAP = dt.timedelta(seconds=10)
_CONFLICTS = (
    psycopg.errors.LockNotAvailable,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
)


class BatchTimedOut(Exception):
    """A batch hit its ``statement_timeout`` (and was rolled back): the caller splits it. Never escapes."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"statement_timeout after {seconds:.2f}s")
        self.seconds = seconds


def _ms(value: dt.timedelta) -> str:
    return f"{max(1, round(value.total_seconds() * 1000))}ms"


def _timed_out(exc: psycopg.errors.QueryCanceled, seconds: float, timeout: dt.timedelta) -> bool:
    """Whether a 57014 came from ``statement_timeout`` rather than a person's ``pg_cancel_backend``.

    The server's message says which (unless ``lc_messages`` translates it); failing that, the time it
    ran tells: a cancel that lands just at the timeout is split like a timeout, which does no harm.
    """
    message = (exc.diag.message_primary or "") if exc.diag else ""
    if "user request" in message:
        return False
    return "statement timeout" in message or seconds >= 0.9 * timeout.total_seconds()


class BatchRunner:
    """Runs ``work(cursor, *args)`` in one transaction under the batch timeouts of ``statement_timeout``."""

    def __init__(
        self,
        conn: psycopg.Connection,
        statement_timeout: dt.timedelta,
        *,
        log: logging.Logger,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.conn, self.log, self.sleep = conn, log, sleep
        self.statement_timeout = statement_timeout
        lock_timeout = min(LOCK_TIMEOUT_CAP, statement_timeout / 2)
        self._settings = (_ms(statement_timeout), _ms(lock_timeout))

    def run(self, what: str, work: Callable[..., _T], *args: Any) -> _T:
        """One transaction of ``work``; raises :class:`BatchTimedOut` if it hit the statement timeout.

        ``what`` names the batch (table, keys) in the error of a failure.
        """
        for attempt in range(CONFLICT_RETRIES + 1):
            started = time.monotonic()
            try:
                with self.conn.transaction(), self.conn.cursor() as cur:
                    cur.execute(
                        "SELECT set_config('statement_timeout', %s, true), set_config('lock_timeout', %s, true)",
                        self._settings,
                    )
                    return work(cur, *args)
            except psycopg.errors.QueryCanceled as exc:
                seconds = time.monotonic() - started
                if _timed_out(exc, seconds, self.statement_timeout):
                    raise BatchTimedOut(seconds) from exc
                raise database_error(exc, what) from exc
            except _CONFLICTS as exc:
                if attempt == CONFLICT_RETRIES:
                    raise database_error(exc, f"{what}, tried {attempt + 1} times") from exc
                delay = 0.2 * 2**attempt
                self.log.warning("%s: hit %s; retrying in %.1fs", what, exc, delay)
                self.sleep(delay)
            except psycopg.Error as exc:
                raise database_error(exc, what) from exc
        raise AssertionError("unreachable")  # pragma: no cover
