"""``rename_table``: the new code sees the new name at once (its view), the old code the table; nothing is
copied. The planner's rename pass renames the table itself at the end of the contract."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from airflow_provider_expand.engine.operations import fields
from airflow_provider_expand.engine.operations.base import Fields, Operation
from airflow_provider_expand.engine.operations.plan import Group
from airflow_provider_expand.engine.operations.schema import Schema


class RenameTableFields(Fields):
    from_: fields.Name = Field(alias="from")
    to: fields.Name


class RenameTable(Operation[RenameTableFields]):
    name = "rename_table"
    fields_model = RenameTableFields

    def check(self, schema: Schema) -> None:
        table = self.need_table(schema, self.fields.from_, "from")
        self.need_free_table(schema, self.fields.to, "to")
        schema.rename_table(table.name, self.fields.to)

    def expand(self) -> Sequence[Group]:
        return ()

    def contract(self) -> Sequence[Group]:
        return ()  # the planner's rename pass: ALTER TABLE <physical> RENAME TO <name>

    def rollback(self) -> Sequence[Group]:
        return ()

    def tables(self) -> tuple[str, ...]:
        return (self.fields.from_, self.fields.to)

    def contract_tables(self) -> dict[str, str | None]:
        return {self.fields.from_: self.fields.to}


OPERATION = RenameTable
