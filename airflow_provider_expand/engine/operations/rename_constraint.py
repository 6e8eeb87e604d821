"""``rename_constraint``: pgroll's rename, done by the contract; during the soak the constraint keeps its
old name (both versions see the same table constraint, and no code names constraints while writing)."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from airflow_provider_expand.engine.operations import errors
from airflow_provider_expand.engine.operations.base import Fields, Operation
from airflow_provider_expand.engine.operations.plan import Group, ident, transaction
from airflow_provider_expand.engine.operations.schema import Schema


class RenameConstraintFields(Fields):
    table: str
    from_: str = Field(alias="from")
    to: str


class RenameConstraint(Operation[RenameConstraintFields]):
    name = "rename_constraint"
    fields_model = RenameConstraintFields
    physical_table = ""

    def check(self, schema: Schema) -> None:
        f = self.fields
        table = self.need_table(schema, f.table, "table")
        con = table.constraints.get(f.from_)
        if con is None:
            known = ", ".join(sorted(table.constraints)) or "none"
            raise self.fail(
                errors.ConstraintNotFoundError,
                "from",
                f"table {table.name!r} has no constraint {f.from_!r} (constraints: {known})",
                table=table.name,
            )
        backed = any(i.constraint == f.from_ for i in table.indexes.values())
        if f.to in table.constraints or (backed and f.to in schema.relation_names()):
            raise self.fail(
                errors.IndexExistsError,
                "to",
                f"a constraint or relation named {f.to!r} already exists (table {table.name!r})",
                table=table.name,
            )
        self.physical_table = table.physical
        con.name = f.to
        table.constraints = {(f.to if k == f.from_ else k): c for k, c in table.constraints.items()}
        for index in table.indexes.values():  # a UNIQUE / PRIMARY KEY renames its index with it
            if index.constraint == f.from_:
                index.constraint = f.to
                table.indexes = {(f.to if k == index.name else k): i for k, i in table.indexes.items()}
                index.name = f.to

    def expand(self) -> Sequence[Group]:
        return []

    def contract(self) -> Sequence[Group]:
        f = self.fields
        statement = (
            "-- expand: allow EX102 because queries do not name constraints; pgroll renames on completion too\n"
            f"ALTER TABLE {self.ctx.table(self.physical_table)} RENAME CONSTRAINT {ident(f.from_)} TO {ident(f.to)}"
        )
        return [transaction(statement, label=self.label)]

    def rollback(self) -> Sequence[Group]:
        return []

    def tables(self) -> tuple[str, ...]:
        return (self.fields.table,)


OPERATION = RenameConstraint
