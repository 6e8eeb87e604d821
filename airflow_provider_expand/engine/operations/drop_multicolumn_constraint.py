"""``drop_multicolumn_constraint``: pgroll's drop of a CHECK, UNIQUE or FOREIGN KEY over one or more columns.

Old code keeps the constrained columns; new code gets copies without the constraint (:mod:`.duplicate`),
so it can write values the constraint would refuse. ``down`` must turn such values into ones that meet
the constraint, since they reach the old columns; ``up`` copies old code's values (default: unchanged).
The contract drops the old columns, and the constraint with them.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field, field_validator

from airflow_provider_expand.engine.operations import errors
from airflow_provider_expand.engine.operations.base import Fields
from airflow_provider_expand.engine.operations.create_constraint import check_per_column, per_column_fields
from airflow_provider_expand.engine.operations.duplicate import Duplication, Shape
from airflow_provider_expand.engine.operations.duplicated import DuplicatedColumns
from airflow_provider_expand.engine.operations.schema import Constraint, Schema, Table

_DROPPABLE = {"c": "CHECK", "f": "FOREIGN KEY", "u": "UNIQUE"}


class DropMultiColumnConstraintFields(Fields):
    table: str
    name: str
    up: dict[str, str] = Field(default_factory=dict)
    down: dict[str, str]

    @field_validator("up", "down")
    @classmethod
    def _per_column(cls, value: dict[str, str]) -> dict[str, str]:
        check_per_column(value)
        return value


class DroppingConstraint(DuplicatedColumns[Fields]):
    """What both drop operations share: find the constraint, copy its columns without it."""

    def find(self, schema: Schema) -> tuple[Table, Constraint, list[str]]:
        name, table_name = self.fields.name, self.fields.table  # type: ignore[attr-defined]
        table = self.need_table(schema, table_name, "table")
        con = table.constraints.get(name)
        if con is None:
            known = ", ".join(sorted(table.constraints)) or "none"
            raise self.fail(
                errors.ConstraintNotFoundError,
                "name",
                f"table {table.name!r} has no constraint {name!r} (constraints: {known})",
                table=table.name,
            )
        if con.type not in _DROPPABLE:
            raise self.fail(
                errors.UnsupportedError,
                "name",
                f"constraint {name!r} of table {table.name!r} is not a CHECK, UNIQUE or FOREIGN KEY constraint "
                "(only those can be dropped by copying their columns); use a sql operation",
                table=table.name,
            )
        columns = [table.logical(p) or p for p in con.columns]
        return table, con, columns

    def plan_drop(self, schema: Schema, table: Table, con: Constraint, shapes: Sequence[Shape]) -> None:
        self.duplication = Duplication(self)
        self.duplication.resolve(schema, table.name, shapes, dropped=frozenset({con.name}))

    def tables(self) -> tuple[str, ...]:
        return (self.fields.table,)  # type: ignore[attr-defined]

    def backfill_tables(self) -> tuple[str, ...]:
        return (self.fields.table,)  # type: ignore[attr-defined]


class DropMultiColumnConstraint(DroppingConstraint):
    name = "drop_multicolumn_constraint"
    fields_model = DropMultiColumnConstraintFields

    def check(self, schema: Schema) -> None:
        f = self.fields
        assert isinstance(f, DropMultiColumnConstraintFields)
        table, con, columns = self.find(schema)
        per_column_fields(self, columns, f.up, f.down)
        missing = [c for c in columns if c not in f.down]
        if missing:
            raise self.fail(
                errors.OperationError,
                "down",
                f"needs an expression for each column of constraint {con.name!r}: missing {', '.join(missing)}",
                table=table.name,
            )
        shapes = [
            Shape(column=c, up=f.up.get(c), down=f.down[c], up_field=f"up.{c}", down_field=f"down.{c}")
            for c in columns
        ]
        self.plan_drop(schema, table, con, shapes)


OPERATION = DropMultiColumnConstraint
