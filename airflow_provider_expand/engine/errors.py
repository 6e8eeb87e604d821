"""One error hierarchy for the engine: every failure is either transient (retry and resume) or definitive.

Airflow's retry policy matches the exception actually raised by class (``RetryRule``), so the engine never
lets a bare psycopg, redis or docker error escape a step: :func:`translated` wraps it into one of the
classes below, keeping its SQLSTATE, and the DAG's policy names :class:`TransientError` (retry) and
:class:`DefinitiveError` (fail at once, so ``rollback`` runs).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

# SQLSTATEs after which the same step, tried again, can succeed: serialization, deadlock, lock timeout,
# and the server shutting down or restarting (class 08 is matched by prefix).
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300"})


class ExpandError(Exception):
    """The base of every error the engine raises on purpose."""


class TransientError(ExpandError):
    """A failure that a later try of the same step can get past: retried by the DAG's retry policy."""


class DefinitiveError(ExpandError):
    """A failure that no retry fixes (bad SQL, a constraint, a refused guard): fails the task at once."""


class DatabaseError(ExpandError):
    """A PostgreSQL error, wrapped with its SQLSTATE so the retry policy can tell it by class."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class DatabaseUnavailableError(DatabaseError, TransientError):
    """The connection was lost or the server is restarting (class 08, 57P01-57P03, too many clients)."""


class ConcurrencyConflictError(DatabaseError, TransientError):
    """Serialization failure, deadlock or lock timeout: someone else held what we needed, for now."""


class DatabaseStatementError(DatabaseError, DefinitiveError):
    """A statement the server refused for what it is (syntax, constraint, missing object, permission)."""


class ServiceUnavailableError(TransientError):
    """Redis or the Docker engine did not answer."""


class GuardRefusedError(DefinitiveError):
    """The migration's state forbids this step (a rollback after the contract began, ...)."""


def is_transient_sqlstate(sqlstate: str | None) -> bool:
    """Whether a server error with ``sqlstate`` may pass on a retry (``None``: no answer, a lost connection)."""
    return sqlstate is None or sqlstate.startswith("08") or sqlstate in TRANSIENT_SQLSTATES


def database_error(exc: psycopg.Error, what: str = "") -> DatabaseError:
    """``exc`` as the engine's class for it, the message prefixed with ``what`` and the SQLSTATE kept."""
    sqlstate = exc.sqlstate
    diag = (exc.diag.message_primary if exc.diag else None) or str(exc).strip() or type(exc).__name__
    message = f"{what}: {diag}" if what else diag
    if sqlstate:
        message += f" [{sqlstate}]"
    cls: type[DatabaseError]
    if sqlstate in ("40001", "40P01", "55P03"):
        cls = ConcurrencyConflictError
    elif (sqlstate is None and isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)) or (
        sqlstate is not None and is_transient_sqlstate(sqlstate)
    ):
        cls = DatabaseUnavailableError
    else:
        cls = DatabaseStatementError
    return cls(message, sqlstate)


def _service_error(exc: BaseException) -> ExpandError | None:
    """Redis and Docker connection failures as :class:`ServiceUnavailableError`; None for anything else."""
    try:
        import redis.exceptions as redis_errors
    except ImportError:  # pragma: no cover - redis is a dependency
        redis_errors = None  # type: ignore[assignment]
    if redis_errors is not None and isinstance(
        exc, redis_errors.ConnectionError | redis_errors.TimeoutError | redis_errors.BusyLoadingError
    ):
        return ServiceUnavailableError(f"Redis did not answer: {exc}")
    try:
        import requests.exceptions as http_errors
    except ImportError:  # pragma: no cover - docker brings requests
        return None
    if isinstance(exc, http_errors.ConnectionError | http_errors.Timeout):
        return ServiceUnavailableError(f"the Docker engine did not answer: {exc}")
    return None


@contextmanager
def translated(what: str = "") -> Iterator[None]:
    """Re-raise driver errors escaping the block as the engine's classes (``raise ... from`` the original).

    The engine's own errors pass through unchanged; so does anything it does not know, which the DAG's
    retry policy then treats as definitive.
    """
    try:
        yield
    except ExpandError:
        raise
    except psycopg.Error as exc:
        raise database_error(exc, what) from exc
    except Exception as exc:
        wrapped = _service_error(exc)
        if wrapped is None:
            raise
        raise wrapped from exc
