"""The backfill's errors, on the engine's one hierarchy (``engine/errors.py``).

The DAG's retry policy tells them apart by class: what a retry of the partition gets past (the partition
lock still held by a dying worker, a dropped connection, a lock conflict) is transient, and the retry
resumes from the ledger checkpoint; what no retry fixes (a bad spec, a ``set`` that raises, rows that
keep appearing, a row too slow to update at all, a migration being rolled back) is definitive.
"""

from __future__ import annotations

from airflow_provider_expand.engine.errors import DefinitiveError, TransientError


class BackfillError(DefinitiveError):
    """A backfill that cannot finish; the message says which table and why."""


class BackfillInputError(BackfillError, ValueError):
    """A bad spec field, found before any row changed; ``field`` names it (``table``, ``set``, ...)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"backfill {field}: {message}")
        self.field = field


class BackfillSweepError(BackfillError):
    """Rows kept matching ``where`` through every sweep round: something keeps creating them.

    Definitive: a retry would sweep against the same writer (a missing sync trigger, old code still
    deployed), which only a person can fix; meanwhile it would only churn the table.
    """


class BackfillRowTimeoutError(BackfillError):
    """One row alone takes longer than the batch ``statement_timeout`` to update: no split can help."""


class BackfillRowError(BackfillError):
    """``set`` raises on one row (found by narrowing the failing batch down): the message names its key.

    Definitive: the row's data makes ``set`` fail (a cast, a constraint, a division by zero) until a person
    fixes the row or the expression. The batches before it stay committed with their checkpoint.
    """

    def __init__(self, message: str, sqlstate: str | None, key: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.key = key


class BackfillStoppedError(BackfillError):
    """The migration is rolling back: the partition stopped after its last committed batch.

    Definitive: a retry would write into a schema that is being (or has been) rolled back.
    """


class BackfillBusyError(TransientError):
    """Another session still holds this partition (a lost worker's backend that has not gone yet)."""
