"""``drop_table``: hidden from the new code at once (no view), dropped by the contract; old code keeps it."""

from __future__ import annotations

from collections.abc import Sequence

from airflow_provider_expand.engine.operations import fields
from airflow_provider_expand.engine.operations.base import Fields, Operation
from airflow_provider_expand.engine.operations.plan import Group, transaction
from airflow_provider_expand.engine.operations.schema import Schema


class DropTableFields(Fields):
    name: fields.Name


class DropTable(Operation[DropTableFields]):
    name = "drop_table"
    fields_model = DropTableFields

    def check(self, schema: Schema) -> None:
        table = self.need_table(schema, self.fields.name, "name")
        self.physical = table.physical
        schema.drop_table(table.name)

    def expand(self) -> Sequence[Group]:
        return ()

    def contract(self) -> Sequence[Group]:
        return (transaction(f"DROP TABLE {self.ctx.table(self.physical)}", label=self.label),)

    def rollback(self) -> Sequence[Group]:
        return ()

    def tables(self) -> tuple[str, ...]:
        return (self.fields.name,)

    def contract_tables(self) -> dict[str, str | None]:
        return {self.fields.name: None}


OPERATION = DropTable
