"""``rename_column``: the new code's view shows the new name, the old code the table's; nothing is copied.
The planner's rename pass renames the column itself at the end of the contract."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from airflow_provider_expand.engine.operations import fields
from airflow_provider_expand.engine.operations.base import Fields, Operation
from airflow_provider_expand.engine.operations.plan import Group
from airflow_provider_expand.engine.operations.schema import Schema


class RenameColumnFields(Fields):
    table: fields.Name
    from_: fields.Name = Field(alias="from")
    to: fields.Name


class RenameColumn(Operation[RenameColumnFields]):
    name = "rename_column"
    fields_model = RenameColumnFields

    def check(self, schema: Schema) -> None:
        f = self.fields
        table = self.need_table(schema, f.table, "table")
        self.need_column(table, f.from_, "from")
        self.need_free_column(table, f.to, "to")
        table.rename_column(f.from_, f.to)

    def expand(self) -> Sequence[Group]:
        return ()

    def contract(self) -> Sequence[Group]:
        return ()  # the planner's rename pass: ALTER TABLE ... RENAME COLUMN <physical> TO <name>

    def rollback(self) -> Sequence[Group]:
        return ()

    def tables(self) -> tuple[str, ...]:
        return (self.fields.table,)


OPERATION = RenameColumn
