"""``drop_column``: hidden from the new code at once (its view leaves it out), dropped by the contract.

While both versions run, the new code's inserts (through the view, without the column) fill the old
column with ``down`` for the old code; a NOT NULL column without a default needs ``down``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from pydantic import field_validator

from airflow_provider_expand.engine.operations import errors, fields, triggers
from airflow_provider_expand.engine.operations.base import Fields, Operation
from airflow_provider_expand.engine.operations.plan import Group, ident, transaction
from airflow_provider_expand.engine.operations.schema import Schema, Table


class DropColumnFields(Fields):
    table: fields.Name
    column: fields.Name
    down: str = ""

    @field_validator("down")
    @classmethod
    def _down(cls, value: str) -> str:
        return fields.check_expression(value) if value else value


class DropColumn(Operation[DropColumnFields]):
    name = "drop_column"
    fields_model = DropColumnFields

    def check(self, schema: Schema) -> None:
        f = self.fields
        table = self.need_table(schema, f.table, "table")
        column = self.need_column(table, f.column, "column")
        if column.physical in table.primary_key:
            raise self.fail(
                errors.ConflictError,
                "column",
                f"{f.table}.{f.column} is part of the primary key; drop the constraint first",
                table=f.table,
                column=f.column,
            )
        if not column.nullable and column.default is None and not column.identity and not f.down:
            raise self.fail(
                errors.OperationError,
                "down",
                f"required: {f.table}.{f.column} is NOT NULL without a default, so the new code's inserts "
                "(which no longer name it) need down to fill it for the old code",
                table=f.table,
                column=f.column,
            )
        table.drop_column(f.column)
        self.physical_column = column.physical
        self.table: Table = copy.deepcopy(table)  # the new version's columns: what down can read

    def _trigger(self) -> triggers.TriggerSQL | None:
        if not self.fields.down:
            return None
        return triggers.column_trigger(
            self.ctx,
            table=self.table.physical,
            column=self.physical_column,
            expression=self.fields.down,
            direction="down",
            variables={c.name: c.physical for c in self.table.columns.values()},
        )

    def expand(self) -> Sequence[Group]:
        trigger = self._trigger()
        return (transaction(*trigger.create, label=self.label),) if trigger else ()

    def contract(self) -> Sequence[Group]:
        trigger = self._trigger()
        drop = f"ALTER TABLE {self.ctx.table(self.table.physical)} DROP COLUMN {ident(self.physical_column)}"
        return (transaction(*(trigger.drop if trigger else ()), drop, label=self.label),)

    def rollback(self) -> Sequence[Group]:
        trigger = self._trigger()
        return (transaction(*trigger.drop, label=self.label),) if trigger else ()

    def tables(self) -> tuple[str, ...]:
        return (self.fields.table,)


OPERATION = DropColumn
