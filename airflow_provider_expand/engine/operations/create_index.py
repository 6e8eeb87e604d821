"""``create_index``: built ``CONCURRENTLY`` after the backfill, by the index builder (which checks it VALID
and rebuilds an invalid leftover); an element with collation, order, nulls or operator class, or storage
parameters, is built by the DDL runner as one ``CREATE INDEX CONCURRENTLY`` in the expand instead. The
rollback drops it concurrently."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, field_validator

from airflow_provider_expand.engine.operations import errors, fields
from airflow_provider_expand.engine.operations.base import Fields, Operation
from airflow_provider_expand.engine.operations.plan import Group, IndexBuild, autocommit, ident
from airflow_provider_expand.engine.operations.schema import Index, Schema, Table
from airflow_provider_expand.engine.statements import FragmentError, parse_predicate


class CreateIndexFields(Fields):
    name: fields.Name
    table: fields.Name
    columns: tuple[fields.IndexField, ...] = Field(min_length=1)
    predicate: str = ""
    method: Literal["btree", "hash", "gist", "spgist", "gin", "brin"] = "btree"
    storage_parameters: str = ""
    unique: bool = False

    @field_validator("columns", mode="before")
    @classmethod
    def _columns(cls, value: Any) -> Any:
        """pgroll has spelled columns three ways: names, ``{column: ...}`` items, and a name -> settings map."""
        if isinstance(value, dict):
            return [{"column": k, **(v or {})} for k, v in value.items()]
        if isinstance(value, list | tuple):
            return [{"column": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("predicate")
    @classmethod
    def _predicate(cls, value: str) -> str:
        if value:
            try:
                parse_predicate(value, subqueries=False)
            except FragmentError as exc:
                raise ValueError(str(exc)) from exc
        return value


class CreateIndex(Operation[CreateIndexFields]):
    name = "create_index"
    fields_model = CreateIndexFields

    @property
    def _plain(self) -> bool:
        """Whether the index builder can build it (plain column names, no storage parameters)."""
        f = self.fields
        return not f.storage_parameters and all(
            not c.collate and not c.sort and c.nulls is None and c.opclass is None for c in f.columns
        )

    def check(self, schema: Schema) -> None:
        f = self.fields
        table = self.need_table(schema, f.table, "table")
        if f.name in schema.relation_names():
            raise self.fail(
                errors.IndexExistsError, "name", f"a relation named {f.name!r} already exists", table=f.table
            )
        physical = []
        for i, element in enumerate(f.columns):
            physical.append(self.need_column(table, element.column, f"columns[{i}].column").physical)
        self.table: Table = table
        self.physical_table = table.physical
        self.physical_columns = tuple(physical)
        table.indexes[f.name] = Index(f.name, self.physical_columns, f.unique, "")

    def _element(self, element: fields.IndexField, physical: str) -> str:
        out = ident(physical)
        if element.collate:
            out += f" COLLATE {ident(element.collate)}"
        if element.opclass is not None and element.opclass.name:
            out += f" {ident(element.opclass.name)}"
            if element.opclass.params:
                out += f" ({', '.join(element.opclass.params)})"
        if element.sort:
            out += f" {element.sort}"
        if element.nulls:
            out += f" NULLS {element.nulls}"
        return out

    def _statement(self) -> str:
        f = self.fields
        elements = ", ".join(
            self._element(e, p) for e, p in zip(f.columns, self.physical_columns, strict=True)
        )
        out = f"CREATE {'UNIQUE ' if f.unique else ''}INDEX CONCURRENTLY {ident(f.name)} ON "
        out += f"{self.ctx.table(self.physical_table)} USING {f.method} ({elements})"
        if f.storage_parameters:
            out += f" WITH ({f.storage_parameters})"
        if f.predicate:
            out += f" WHERE {f.predicate}"
        return out

    def expand(self) -> Sequence[Group]:
        return () if self._plain else (autocommit(self._statement(), label=self.label),)

    def indexes(self) -> Sequence[IndexBuild]:
        if not self._plain:
            return ()
        f = self.fields
        return (
            IndexBuild(
                name=f.name,
                table=f"{self.ctx.schema}.{self.physical_table}",
                columns=self.physical_columns,
                unique=f.unique,
                where=f.predicate or None,
                using=f.method,
            ),
        )

    def contract(self) -> Sequence[Group]:
        return ()

    def rollback(self) -> Sequence[Group]:
        drop = f"DROP INDEX CONCURRENTLY IF EXISTS {ident(self.ctx.schema, self.fields.name)}"
        return (autocommit(drop, label=self.label),)

    def tables(self) -> tuple[str, ...]:
        return (self.fields.table,)

    def index_names(self) -> tuple[str, ...]:
        return (self.fields.name,) if self._plain else ()


OPERATION = CreateIndex
