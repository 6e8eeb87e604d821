"""``alter_column``: pgroll's change of one column's type, nullability, default, constraints, comment or name.

A change old code would notice (``type``, ``nullable``, ``check``, ``unique``, ``references``) goes through
a duplicated column (:mod:`.duplicate`): the old column stays as it is for old code, the new one has the
new shape for new code, ``up``/``down`` carry each version's writes to the other. A change of only
``name``, ``comment`` or ``default`` needs no copy: the name changes in the view (the contract renames the
column), the comment and the default are set on the column at once (old code accepts both) and put back
by a rollback.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import field_validator

from airflow_provider_expand.engine.operations import errors
from airflow_provider_expand.engine.operations.base import Fields, Operation
from airflow_provider_expand.engine.operations.duplicate import Added, Duplication, Shape
from airflow_provider_expand.engine.operations.fields import (
    CheckConstraint,
    ForeignKeyReference,
    check_expression,
    check_type,
)
from airflow_provider_expand.engine.operations.plan import (
    Backfill,
    Group,
    IndexBuild,
    ident,
    literal,
    transaction,
)
from airflow_provider_expand.engine.operations.schema import Schema


class UniqueConstraint(Fields):
    name: str


class AlterColumnFields(Fields):
    table: str
    column: str
    name: str | None = None
    type: str | None = None
    nullable: bool | None = None
    default: str | None = None  # null (written) drops the default; left out keeps it
    check: CheckConstraint | None = None
    unique: UniqueConstraint | None = None
    references: ForeignKeyReference | None = None
    comment: str | None = None  # null (written) removes the comment
    up: str | None = None
    down: str | None = None

    @field_validator("type")
    @classmethod
    def _type(cls, value: str | None) -> str | None:
        return None if value is None else check_type(value)

    @field_validator("default", "up", "down")
    @classmethod
    def _expression(cls, value: str | None) -> str | None:
        return None if value is None else check_expression(value)


def references_sql(schema: Schema, op: Operation, ref: ForeignKeyReference | None, field: str) -> str:
    """``REFERENCES "public"."users" ("id") ON DELETE ...`` for a reference checked against the model."""
    assert ref is not None
    table = op.need_table(schema, ref.table, f"{field}.table")
    column = op.need_column(table, ref.column, f"{field}.column")
    text = f"REFERENCES {op.ctx.table(table.physical)} ({ident(column.physical)})"
    if ref.match_type != "SIMPLE":
        text += f" MATCH {ref.match_type}"
    if ref.on_delete != "NO ACTION":
        text += f" ON DELETE {ref.on_delete}"
    if ref.on_update != "NO ACTION":
        text += f" ON UPDATE {ref.on_update}"
    if ref.deferrable:
        text += " DEFERRABLE" + (" INITIALLY DEFERRED" if ref.initially_deferred else "")
    return text


class AlterColumn(Operation[AlterColumnFields]):
    name = "alter_column"
    fields_model = AlterColumnFields

    duplication: Duplication | None = None  # set by check(): the copy, or the in-place statements
    in_place: tuple[str, ...] = ()
    undo: tuple[str, ...] = ()

    def _duplicates(self) -> bool:
        f = self.fields
        return any(x is not None for x in (f.type, f.nullable, f.check, f.unique, f.references))

    def check(self, schema: Schema) -> None:
        f, given = self.fields, self.fields.model_fields_set
        table = self.need_table(schema, f.table, "table")
        column = self.need_column(table, f.column, "column")
        changes = given & {"name", "type", "nullable", "default", "check", "unique", "references", "comment"}
        if not changes:
            raise self.fail(
                errors.OperationError,
                "",
                f"changes nothing in column {f.column!r} of table {f.table!r} (give type, nullable, default, "
                "check, unique, references, comment or name)",
                table=f.table,
                column=f.column,
            )
        if f.nullable is not None and f.nullable == column.nullable and not (changes - {"nullable"}):
            raise self.fail(
                errors.OperationError,
                "nullable",
                f"column {f.column!r} of table {f.table!r} is already {'' if f.nullable else 'NOT '}NULL",
                table=f.table,
                column=f.column,
            )
        if self._duplicates():
            added: list[Added] = []
            if f.check is not None:
                added.append(
                    Added(f.check.name, "check", (f.column,), "check", f.check.constraint, f.check.no_inherit)
                )
            if f.unique is not None:
                added.append(Added(f.unique.name, "unique", (f.column,), "unique"))
            if f.references is not None:
                refs = references_sql(schema, self, f.references, "references")
                added.append(
                    Added(f.references.name, "foreign_key", (f.column,), "references", references=refs)
                )
            shape = Shape(
                column=f.column,
                up=f.up,
                down=f.down,
                name=f.name,
                type=f.type,
                nullable=f.nullable,
                default=f.default,
                default_set="default" in given,
                comment=f.comment,
                comment_set="comment" in given,
            )
            self.duplication = Duplication(self)
            self.duplication.resolve(schema, f.table, [shape], added)
            return
        qualified, col = self.ctx.table(table.physical), ident(column.physical)
        in_place, undo = [], []
        if "default" in given:
            in_place.append(_set_default(qualified, col, f.default))
            undo.append(_set_default(qualified, col, column.default))
            column.default = f.default
        if "comment" in given:
            in_place.append(_comment(qualified, col, f.comment))
            undo.append(_comment(qualified, col, column.comment))
            column.comment = f.comment
        self.in_place, self.undo = tuple(in_place), tuple(undo)
        if f.name is not None and f.name != column.name:
            self.need_free_column(table, f.name, "name")
            table.rename_column(column.name, f.name)  # the view renames now, the contract's rename pass later

    def expand(self) -> Sequence[Group]:
        if self.duplication is not None:
            return self.duplication.expand()
        return [transaction(*self.in_place, label=self.label)] if self.in_place else []

    def backfills(self) -> Sequence[Backfill]:
        return self.duplication.backfills() if self.duplication is not None else []

    def indexes(self) -> Sequence[IndexBuild]:
        return self.duplication.indexes() if self.duplication is not None else []

    def contract(self) -> Sequence[Group]:
        return self.duplication.contract() if self.duplication is not None else []

    def rollback(self) -> Sequence[Group]:
        if self.duplication is not None:
            return self.duplication.rollback()
        return [transaction(*self.undo, label=self.label)] if self.undo else []

    def tables(self) -> tuple[str, ...]:
        ref = self.fields.references
        return (self.fields.table,) + (
            (ref.table,) if ref is not None and ref.table != self.fields.table else ()
        )

    def backfill_tables(self) -> tuple[str, ...]:
        return (self.fields.table,) if self._duplicates() else ()

    def index_names(self) -> tuple[str, ...]:
        return (self.fields.unique.name,) if self.fields.unique is not None else ()


def _set_default(table: str, column: str, default: str | None) -> str:
    if default is None:
        return f"ALTER TABLE {table} ALTER COLUMN {column} DROP DEFAULT"
    return f"ALTER TABLE {table} ALTER COLUMN {column} SET DEFAULT {default}"


def _comment(table: str, column: str, comment: str | None) -> str:
    return f"COMMENT ON COLUMN {table}.{column} IS {'NULL' if comment is None else literal(comment)}"


OPERATION = AlterColumn
