"""One backfill transaction under the batch's own timeouts, and what its failures mean.

Every batch transaction sets ``statement_timeout`` (how long a batch may hold its row locks before the
engine splits it) and, below it, ``lock_timeout`` (a wait for a table lock is a conflict to retry, not a
slow batch to split). A short conflict is retried here a few times; past that, and for anything else the
server says, the driver error leaves as the engine's class for it (``errors.database_error``), so a lost
connection is transient and a ``set`` that raises is definitive, both naming the table. An error that
belongs to a row's data (SQLSTATE classes in ``ROW_ERROR_CLASSES``: a bad cast, a violated constraint, a
``RAISE``) is handed back to the walk instead, which narrows the batch down to the row and names its key.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from airflow_provider_expand.engine.errors import DatabaseError, database_error

_T = TypeVar("_T")

CONFLICT_RETRIES = 5
LOCK_TIMEOUT_CAP = dt.timedelta(seconds=10)
_CONFLICTS = (
    psycopg.errors.LockNotAvailable,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
)


# Data exception, integrity constraint, PL/pgSQL RAISE, routine exceptions, WITH CHECK OPTION: errors some
# rows cause and others do not, so halving the batch finds the row.
ROW_ERROR_CLASSES = ("22", "23", "P0", "2F", "38", "39", "44")


class BatchRowsLocked(Exception):
    """A batch run with a short ``lock_wait`` waited that long on a lock (the app holding one of its rows,
    most likely) and was rolled back: the walk runs the window again, skipping locked rows."""


class BatchSplit(Exception):
    """A batch that was rolled back and must be retried as its two halves. Never escapes the walk."""

    def __init__(self, message: str, seconds: float) -> None:
        super().__init__(message)
        self.seconds = seconds


class BatchTimedOut(BatchSplit):
    """A batch hit its ``statement_timeout``: its halves may each fit."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"statement_timeout after {seconds:.2f}s", seconds)


class BatchRowFailed(BatchSplit):
    """A batch failed on some row's data: one of its halves holds that row.

    ``error`` is the failure as the engine's class (naming the batch), ``detail`` the server's words alone.
    """

    def __init__(self, exc: psycopg.Error, what: str, seconds: float) -> None:
        self.error: DatabaseError = database_error(exc, what)
        self.detail = str(database_error(exc))
        super().__init__(str(self.error), seconds)


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

    def run(
        self, what: str, work: Callable[..., _T], *args: Any, lock_wait: dt.timedelta | None = None
    ) -> _T:
        """One transaction of ``work``; raises :class:`BatchTimedOut` if it hit the statement timeout.

        ``what`` names the batch (table, keys) in the error of a failure. With ``lock_wait``, any lock wait
        longer than that raises :class:`BatchRowsLocked` at once instead of being retried.
        """
        settings = self._settings if lock_wait is None else (self._settings[0], _ms(lock_wait))
        for attempt in range(CONFLICT_RETRIES + 1):
            started = time.monotonic()
            try:
                with self.conn.transaction(), self.conn.cursor() as cur:
                    cur.execute(
                        "SELECT set_config('statement_timeout', %s, true), set_config('lock_timeout', %s, true)",
                        settings,
                    )
                    return work(cur, *args)
            except psycopg.errors.QueryCanceled as exc:
                seconds = time.monotonic() - started
                if _timed_out(exc, seconds, self.statement_timeout):
                    raise BatchTimedOut(seconds) from exc
                raise database_error(exc, what) from exc
            except _CONFLICTS as exc:
                if lock_wait is not None and not isinstance(exc, psycopg.errors.SerializationFailure):
                    raise BatchRowsLocked(str(exc)) from exc
                if attempt == CONFLICT_RETRIES:
                    raise database_error(exc, f"{what}, tried {attempt + 1} times") from exc
                delay = 0.2 * 2**attempt
                self.log.warning("%s: hit %s; retrying in %.1fs", what, exc, delay)
                self.sleep(delay)
            except psycopg.Error as exc:
                if (exc.sqlstate or "")[:2] in ROW_ERROR_CLASSES:
                    raise BatchRowFailed(exc, what, time.monotonic() - started) from exc
                raise database_error(exc, what) from exc
        raise AssertionError("unreachable")  # pragma: no cover
