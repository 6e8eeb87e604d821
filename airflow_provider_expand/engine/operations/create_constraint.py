"""``create_constraint``: pgroll's UNIQUE, CHECK or FOREIGN KEY over one or more existing columns.

Every covered column is duplicated (:mod:`.duplicate`), the constraint is put on the new columns in the
form that takes no long lock (``NOT VALID``, or a unique index built concurrently), ``up`` moves old
code's values into values that meet it, ``down`` the other way, and the contract validates it and drops
the old columns. A PRIMARY KEY is not supported: replacing the key columns of a table that other tables
reference cannot be done by copies (a ``sql`` operation can add one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from airflow_provider_expand.engine.operations import errors
from airflow_provider_expand.engine.operations.base import Fields, Operation
from airflow_provider_expand.engine.operations.duplicate import Added, Duplication, Shape
from airflow_provider_expand.engine.operations.duplicated import DuplicatedColumns
from airflow_provider_expand.engine.operations.fields import (
    IndexParameters,
    TableForeignKeyReference,
    check_expression,
)
from airflow_provider_expand.engine.operations.plan import ident
from airflow_provider_expand.engine.operations.schema import Schema


def check_per_column(value: dict[str, str] | None) -> dict[str, str] | None:
    """pgroll's ``MultiColumnUpSQL``: one SQL expression per column."""
    for expression in (value or {}).values():
        check_expression(expression)
    return value


class CreateConstraintFields(Fields):
    table: str
    name: str
    type: Literal["unique", "check", "primary_key", "foreign_key"]
    columns: tuple[str, ...] = Field(min_length=1)
    check: str | None = None
    no_inherit: bool = False
    index_parameters: IndexParameters | None = None
    references: TableForeignKeyReference | None = None
    up: dict[str, str] = Field(default_factory=dict)
    down: dict[str, str] = Field(default_factory=dict)

    @field_validator("check")
    @classmethod
    def _check(cls, value: str | None) -> str | None:
        return None if value is None else check_expression(value)

    @field_validator("up", "down")
    @classmethod
    def _per_column(cls, value: dict[str, str]) -> dict[str, str]:
        check_per_column(value)
        return value

    @model_validator(mode="after")
    def _by_type(self) -> CreateConstraintFields:
        if self.type == "check" and not self.check:
            raise ValueError("check: required for a constraint of type check")
        if self.type == "foreign_key" and self.references is None:
            raise ValueError("references: required for a constraint of type foreign_key")
        return self


def per_column_fields(
    op: Operation[Any], columns: Sequence[str], up: dict[str, str], down: dict[str, str]
) -> None:
    """pgroll's rule: ``up``/``down`` name only the covered columns."""
    for field, given in (("up", up), ("down", down)):
        extra = sorted(set(given) - set(columns))
        if extra:
            raise op.fail(
                errors.OperationError,
                f"{field}.{extra[0]}",
                f"column {extra[0]!r} is not covered by the constraint (columns: {', '.join(columns)})",
                column=extra[0],
            )


class CreateConstraint(DuplicatedColumns[CreateConstraintFields]):
    name = "create_constraint"
    fields_model = CreateConstraintFields

    def check(self, schema: Schema) -> None:
        f = self.fields
        if f.type == "primary_key":
            raise self.fail(
                errors.UnsupportedError,
                "type",
                "primary_key is not supported: a duplicated key column cannot take over the key that other "
                "tables reference; add a primary key with a sql operation",
                table=f.table,
            )
        params = f.index_parameters
        if params is not None and (params.tablespace or params.storage_parameters or params.include_columns):
            raise self.fail(
                errors.UnsupportedError,
                "index_parameters",
                "the index builder does not take a tablespace, storage parameters or INCLUDE columns yet",
                table=f.table,
            )
        if len(set(f.columns)) != len(f.columns):
            raise self.fail(errors.OperationError, "columns", "names a column twice", table=f.table)
        per_column_fields(self, f.columns, f.up, f.down)
        table = self.need_table(schema, f.table, "table")
        for column in f.columns:
            self.need_column(table, column, "columns")
        added = Added(
            f.name,
            "foreign_key" if f.type == "foreign_key" else f.type,
            f.columns,
            "name",
            f.check,
            f.no_inherit,
        )
        if f.references is not None:
            added = Added(f.name, "foreign_key", f.columns, "name", references=self._references(schema))
        shapes = [
            Shape(column=c, up=f.up.get(c), down=f.down.get(c), up_field=f"up.{c}", down_field=f"down.{c}")
            for c in f.columns
        ]
        self.duplication = Duplication(self)
        self.duplication.resolve(schema, f.table, shapes, [added])

    def _references(self, schema: Schema) -> str:
        ref = self.fields.references
        assert ref is not None
        target = self.need_table(schema, ref.table, "references.table")
        physical = [self.need_column(target, c, "references.columns").physical for c in ref.columns]
        if len(physical) != len(self.fields.columns):
            raise self.fail(
                errors.OperationError,
                "references.columns",
                f"names {len(physical)} columns for the {len(self.fields.columns)} columns of the constraint",
                table=self.fields.table,
            )
        text = f"REFERENCES {self.ctx.table(target.physical)} ({', '.join(ident(p) for p in physical)})"
        if ref.match_type != "SIMPLE":
            text += f" MATCH {ref.match_type}"
        if ref.on_delete != "NO ACTION":
            text += f" ON DELETE {ref.on_delete}"
            if ref.on_delete_set_columns:
                text += f" ({', '.join(ident(c) for c in ref.on_delete_set_columns)})"
        if ref.on_update != "NO ACTION":
            text += f" ON UPDATE {ref.on_update}"
        return text

    def tables(self) -> tuple[str, ...]:
        ref = self.fields.references
        return (self.fields.table,) + (
            (ref.table,) if ref is not None and ref.table != self.fields.table else ()
        )

    def backfill_tables(self) -> tuple[str, ...]:
        return (self.fields.table,)

    def index_names(self) -> tuple[str, ...]:
        return (self.fields.name,) if self.fields.type == "unique" else ()


OPERATION = CreateConstraint
