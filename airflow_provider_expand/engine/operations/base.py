"""The interface every operation module implements: pgroll's Validate/Start/Complete/Rollback in our words.

``validate(schema)`` checks the operation against the schema model and applies its change to the model (so
the next operation sees it), remembering what it resolved; ``expand``, ``backfills``, ``indexes``,
``contract`` and ``rollback`` then return plans as data (:mod:`.plan`). They are called in that order by
the planner, once per migration, and never touch a database.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from airflow_provider_expand.engine.operations import errors
from airflow_provider_expand.engine.operations.plan import Backfill, Group, IndexBuild, ident
from airflow_provider_expand.engine.operations.schema import Column, Schema, Table

MARKER_COLUMN = "_expand_needs_backfill"  # the planner's per-table "row not yet backfilled" flag


class Fields(BaseModel):
    """Base of every operation's fields: pgroll's names, strict, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, populate_by_name=True)


F = TypeVar("F", bound=Fields)


@dataclass(frozen=True)
class PlanContext:
    """What every operation's plan depends on besides its fields and the schema model."""

    migration_id: str
    schema: str = "public"  # the PostgreSQL schema holding the tables (old code's search_path)
    source: str = "migration.yaml"  # for error messages

    @property
    def version_schema(self) -> str:
        """The schema of views the new code sets ``search_path`` to: named after the migration."""
        return self.migration_id

    def table(self, physical: str) -> str:
        """``"public"."products"``."""
        return ident(self.schema, physical)


class Operation(ABC, Generic[F]):
    """One operation of a migration: built from its fields and its position in the ``operations`` list."""

    name: ClassVar[str]  # pgroll's operation name (``create_table``)
    fields_model: ClassVar[type[Fields]]

    def __init__(self, fields: F, *, index: int, ctx: PlanContext) -> None:
        self.fields = fields
        self.index = index
        self.ctx = ctx
        self._validated = False

    @property
    def label(self) -> str:
        return f"operations[{self.index}].{self.name}"

    # -- the interface ------------------------------------------------------------------------

    def validate(self, schema: Schema) -> None:
        """Check against ``schema`` and apply the change to it; raises an :class:`errors.OperationError`."""
        self.check(schema)
        self._validated = True

    @abstractmethod
    def check(self, schema: Schema) -> None:
        """The operation's own validation and model update (``validate`` wraps it)."""

    @abstractmethod
    def expand(self) -> Sequence[Group]:
        """What makes both versions work: runs in the expand task, before the deploy."""

    def backfills(self) -> Sequence[Backfill]:
        """Tables whose existing rows need filling after the expand (through the marker column)."""
        return ()

    def indexes(self) -> Sequence[IndexBuild]:
        """Indexes the index builder creates after the backfill."""
        return ()

    @abstractmethod
    def contract(self) -> Sequence[Group]:
        """What remains once the old code is gone: runs after the soak, forward-only."""

    @abstractmethod
    def rollback(self) -> Sequence[Group]:
        """Undo exactly what ``expand`` (and the backfill, index steps) added."""

    # -- static facts, known without a database (DAG shape, ``begin``'s conflict check) ------------

    def tables(self) -> tuple[str, ...]:
        """The tables the operation touches, as its fields name them."""
        return ()

    def backfill_tables(self) -> tuple[str, ...]:
        """The tables that get a ``backfill.<table>`` task, as its fields name them."""
        return ()

    def index_names(self) -> tuple[str, ...]:
        """The indexes that get an ``index.<name>`` task."""
        return ()

    def contract_tables(self) -> dict[str, str | None]:
        """The tables the contract renames (name -> new name) or drops (name -> None), so the checks after
        it look for the table under its new name, or not at all."""
        return {}

    @property
    def isolated(self) -> bool:
        """Whether it must be its migration's only operation (what it changes is not in the schema model)."""
        return False

    @property
    def after_renames(self) -> bool:
        """Whether its contract runs after the rename pass, against the final names."""
        return False

    # -- helpers for the operations -------------------------------------------------------------

    def fail(
        self,
        cls: type[errors.OperationError],
        field: str,
        message: str,
        *,
        table: str | None = None,
        column: str | None = None,
    ) -> errors.OperationError:
        """An error naming the file, this operation's index and the field."""
        return cls(
            message,
            index=self.index,
            operation=self.name,
            field=field,
            source=self.ctx.source,
            table=table,
            column=column,
        )

    def need_table(self, schema: Schema, name: str, field: str) -> Table:
        table = schema.table(name)
        if table is None:
            known = ", ".join(sorted(schema.tables)) or "none"
            raise self.fail(
                errors.TableNotFoundError,
                field,
                f"table {name!r} does not exist in schema {schema.name!r} (after the operations before "
                f"this one; tables: {known})",
                table=name,
            )
        return table

    def need_column(self, table: Table, name: str, field: str) -> Column:
        column = table.column(name)
        if column is None:
            known = ", ".join(table.columns) or "none"
            raise self.fail(
                errors.ColumnNotFoundError,
                field,
                f"column {name!r} does not exist in table {table.name!r} (columns: {known})",
                table=table.name,
                column=name,
            )
        return column

    def need_free_table(self, schema: Schema, name: str, field: str) -> None:
        if schema.table(name) is not None or name in schema.relation_names():
            raise self.fail(
                errors.TableExistsError,
                field,
                f"a table or index named {name!r} already exists in schema {schema.name!r}",
                table=name,
            )

    def need_free_column(self, table: Table, name: str, field: str) -> None:
        if table.column(name) is not None or table.physical_column(name) is not None:
            raise self.fail(
                errors.ColumnExistsError,
                field,
                f"table {table.name!r} already has a column named {name!r}",
                table=table.name,
                column=name,
            )


def dump_fields(fields: BaseModel) -> dict[str, Any]:
    """The fields as pgroll writes them (aliases, unset defaults left out)."""
    return fields.model_dump(by_alias=True, exclude_unset=True)
