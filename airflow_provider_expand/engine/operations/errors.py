"""Typed errors of the operations: each names the file, the operation's index and name, and the field.

They are definitive (no retry fixes bad input) and are raised before any statement runs.
"""

from __future__ import annotations

from airflow_provider_expand.engine.errors import DefinitiveError


class OperationError(DefinitiveError):
    """An operation that cannot be applied: ``<file>: operations[<index>].<op>.<field>: <message>``."""

    def __init__(
        self,
        message: str,
        *,
        index: int,
        operation: str,
        field: str = "",
        source: str = "migration.yaml",
        table: str | None = None,
        column: str | None = None,
    ) -> None:
        where = (
            f"operations[{index}]" + (f".{operation}" if operation else "") + (f".{field}" if field else "")
        )
        super().__init__(f"{source}: {where}: {message}")
        self.located = f"{where}: {message}"  # without the file, for the spec loader (which adds it)
        self.message = message
        self.index, self.operation, self.field, self.source = index, operation, field, source
        self.table, self.column = table, column


class TableNotFoundError(OperationError):
    """The operation names a table that does not exist (in the catalog, or after the earlier operations)."""


class TableExistsError(OperationError):
    """The operation would create (or rename to) a table name that is taken."""


class ColumnNotFoundError(OperationError):
    """The operation names a column its table does not have."""


class ColumnExistsError(OperationError):
    """The operation would create (or rename to) a column name its table already has."""


class IndexNotFoundError(OperationError):
    """The operation names an index that does not exist."""


class IndexExistsError(OperationError):
    """The operation would create an index (or constraint) whose name is taken in the schema."""


class ConstraintNotFoundError(OperationError):
    """The operation names a constraint its table does not have."""


class ConflictError(OperationError):
    """Two operations of one migration that cannot both be applied (a ``sql`` operation among others, ...)."""


class ExpressionError(OperationError):
    """An ``up``/``down``/``default``/``check``/``predicate`` expression that does not parse as one expression."""


class UnsupportedError(OperationError):
    """A field or value of pgroll's vocabulary that this provider does not implement (the message says why)."""
