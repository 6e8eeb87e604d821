"""``drop_index``: the old code may still rely on the index, so the contract drops it (``DROP INDEX
CONCURRENTLY``, run watched by the DDL runner under its lock-wait bound); nothing to undo before that."""

from __future__ import annotations

from collections.abc import Sequence

from airflow_provider_expand.engine.operations import errors, fields
from airflow_provider_expand.engine.operations.base import Fields, Operation
from airflow_provider_expand.engine.operations.plan import Group, autocommit, ident
from airflow_provider_expand.engine.operations.schema import Schema


class DropIndexFields(Fields):
    name: fields.Name


class DropIndex(Operation[DropIndexFields]):
    name = "drop_index"
    fields_model = DropIndexFields

    def check(self, schema: Schema) -> None:
        found = schema.index(self.fields.name)
        if found is None:
            raise self.fail(
                errors.IndexNotFoundError,
                "name",
                f"index {self.fields.name!r} does not exist in {schema.name!r}",
            )
        table, index = found
        if index.constraint:
            raise self.fail(
                errors.ConflictError,
                "name",
                f"index {index.name!r} backs constraint {index.constraint!r} of {table.name!r}; "
                "drop the constraint instead (drop_constraint)",
                table=table.name,
            )
        self.table_name = table.name
        del table.indexes[index.name]

    def expand(self) -> Sequence[Group]:
        return ()

    def contract(self) -> Sequence[Group]:
        drop = f"DROP INDEX CONCURRENTLY IF EXISTS {ident(self.ctx.schema, self.fields.name)}"
        return (autocommit(drop, label=self.label),)

    def rollback(self) -> Sequence[Group]:
        return ()


OPERATION = DropIndex
