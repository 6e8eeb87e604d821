"""The errors of a phase file's statements: each says ``file:line`` and keeps the SQLSTATE, and its class
says whether a retry of the task can get past it (the engine's one hierarchy, ``errors``)."""

from __future__ import annotations

import psycopg

from airflow_provider_expand.engine import errors
from airflow_provider_expand.engine.statements import Statement


class DDLError(errors.DatabaseError):
    """A statement of a phase file failed; the message starts with ``file:line``, the SQLSTATE is kept.
    Raised as one of the subclasses, which say whether a retry of the task can get past it."""

    def __init__(self, statement: Statement, message: str, sqlstate: str | None = None) -> None:
        super().__init__(f"{statement.where}: {message}", sqlstate)
        self.statement = statement


class DDLStatementError(DDLError, errors.DefinitiveError):
    """The server refused the statement for what it is; its group was rolled back (an autocommit one
    cleaned up). No retry fixes it: the file (or the data) must change."""


class DDLTransientError(DDLError, errors.TransientError):
    """The statement was interrupted (connection lost, server restarting, serialization failure); its
    group was rolled back, so a retry of the task resumes at that group."""


def statement_error(statement: Statement, message: str, exc: psycopg.Error) -> DDLError:
    """``exc`` (what the server said about ``statement``) as the runner's transient or definitive class;
    which one is decided by :func:`errors.database_error`, the engine's one classification of SQLSTATEs."""
    transient = isinstance(errors.database_error(exc), errors.TransientError)
    return (DDLTransientError if transient else DDLStatementError)(statement, message, exc.sqlstate)
