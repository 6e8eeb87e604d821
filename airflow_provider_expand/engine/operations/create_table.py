"""``create_table``: a new table, created in the expand (nothing reads it yet), dropped by the rollback."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field, model_validator

from airflow_provider_expand.engine.operations import columns, errors, fields
from airflow_provider_expand.engine.operations.base import Fields, Operation
from airflow_provider_expand.engine.operations.plan import Group, ident, idents, literal, transaction
from airflow_provider_expand.engine.operations.schema import Index, Schema, Table


class CreateTableFields(Fields):
    name: fields.Name
    columns: tuple[fields.Column, ...] = Field(min_length=1)
    constraints: tuple[fields.Constraint, ...] = ()
    comment: str | None = None

    @model_validator(mode="after")
    def _one_primary_key(self) -> CreateTableFields:
        names = [c.name for c in self.columns]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"columns: {', '.join(twice)} given twice")
        if any(c.pk for c in self.columns) and any(c.type == "primary_key" for c in self.constraints):
            raise ValueError("a primary key goes in columns (pk: true) or in constraints, not both")
        return self


def _constraint_sql(constraint: fields.Constraint, schema: str) -> str:
    """One table constraint of pgroll's ``constraints`` list as SQL."""
    head = f"CONSTRAINT {ident(constraint.name)} "
    params = constraint.index_parameters
    tail = ""
    if params is not None:
        if params.include_columns:
            tail += f" INCLUDE ({idents(params.include_columns)})"
        if params.storage_parameters:
            tail += f" WITH ({params.storage_parameters})"
        if params.tablespace:
            tail += f" USING INDEX TABLESPACE {ident(params.tablespace)}"
    deferral = ""
    if constraint.deferrable:
        deferral = " DEFERRABLE" + (" INITIALLY DEFERRED" if constraint.initially_deferred else "")
    kind = constraint.type
    if kind == "primary_key":
        return f"{head}PRIMARY KEY ({idents(constraint.columns)}){tail}{deferral}"
    if kind == "unique":
        nulls = " NULLS NOT DISTINCT" if constraint.nulls_not_distinct else ""
        return f"{head}UNIQUE{nulls} ({idents(constraint.columns)}){tail}{deferral}"
    if kind == "check":
        return f"{head}CHECK ({constraint.check})" + (" NO INHERIT" if constraint.no_inherit else "")
    if kind == "foreign_key":
        ref = constraint.references
        assert ref is not None
        out = f"{head}FOREIGN KEY ({idents(constraint.columns)}) REFERENCES {ident(schema, ref.table)}"
        out += f" ({idents(ref.columns)})"
        if ref.match_type != "SIMPLE":
            out += f" MATCH {ref.match_type}"
        if ref.on_delete != "NO ACTION":
            out += f" ON DELETE {ref.on_delete}"
            if ref.on_delete_set_columns:
                out += f" ({idents(ref.on_delete_set_columns)})"
        if ref.on_update != "NO ACTION":
            out += f" ON UPDATE {ref.on_update}"
        return out + deferral
    exclude = constraint.exclude
    assert exclude is not None
    method = f" USING {exclude.index_method}" if exclude.index_method else ""
    where = f" WHERE ({exclude.predicate})" if exclude.predicate else ""
    return f"{head}EXCLUDE{method} ({exclude.elements}){tail}{where}{deferral}"


class CreateTable(Operation[CreateTableFields]):
    name = "create_table"
    fields_model = CreateTableFields

    def check(self, schema: Schema) -> None:
        f = self.fields
        self.need_free_table(schema, f.name, "name")
        for i, constraint in enumerate(f.constraints):
            where = f"constraints[{i}]"
            if constraint.type in ("unique", "primary_key", "foreign_key") and not constraint.columns:
                raise self.fail(errors.OperationError, f"{where}.columns", "required for this type")
            if constraint.type == "check" and not constraint.check:
                raise self.fail(errors.OperationError, f"{where}.check", "required for a check constraint")
            if constraint.type == "foreign_key" and constraint.references is None:
                raise self.fail(errors.OperationError, f"{where}.references", "required for a foreign key")
            if constraint.type == "exclude" and constraint.exclude is None:
                raise self.fail(
                    errors.OperationError, f"{where}.exclude", "required for an exclude constraint"
                )
            unknown = [c for c in constraint.columns if c not in {col.name for col in f.columns}]
            if unknown:
                raise self.fail(
                    errors.ColumnNotFoundError,
                    f"{where}.columns",
                    f"{', '.join(unknown)} not among the table's columns",
                    table=f.name,
                    column=unknown[0],
                )
        for i, column in enumerate(f.columns):
            if column.references is not None:
                target = schema.table(column.references.table)
                if target is None and column.references.table != f.name:
                    raise self.fail(
                        errors.TableNotFoundError,
                        f"columns[{i}].references.table",
                        f"table {column.references.table!r} does not exist",
                        table=column.references.table,
                    )
        table = Table(name=f.name, physical=f.name, comment=f.comment, created=True)
        for column in f.columns:
            table.add_column(columns.model_column(column))
        pk = tuple(c.name for c in f.columns if c.pk)
        for constraint in f.constraints:
            if constraint.type == "primary_key":
                pk = constraint.columns
        if pk:
            table.constraints[f"{f.name}_pkey"] = columns.model_constraint(f"{f.name}_pkey", "p", pk, "")
            table.indexes[f"{f.name}_pkey"] = Index(f"{f.name}_pkey", pk, True, "", primary=True)
        schema.add_table(table)

    def _create(self) -> str:
        f, schema = self.fields, self.ctx.schema
        parts: list[str] = []
        for column in f.columns:
            text = columns.definition(column)
            if column.unique:
                text += " UNIQUE"
            if column.check is not None:
                text += f" CONSTRAINT {ident(column.check.name)} CHECK ({column.check.constraint})"
                text += " NO INHERIT" if column.check.no_inherit else ""
            if column.references is not None:
                text += f" CONSTRAINT {ident(column.references.name)} "
                text += columns.references_sql(column.references, schema)
            parts.append(text)
        pk = [c.name for c in f.columns if c.pk]
        if pk:
            parts.append(f"PRIMARY KEY ({idents(pk)})")
        parts += [_constraint_sql(c, schema) for c in f.constraints]
        body = ",\n  ".join(parts)
        return f"CREATE TABLE {self.ctx.table(f.name)} (\n  {body}\n)"

    def expand(self) -> Sequence[Group]:
        f = self.fields
        statements = [self._create()]
        if f.comment is not None:
            statements.append(f"COMMENT ON TABLE {self.ctx.table(f.name)} IS {literal(f.comment)}")
        for column in f.columns:
            if column.comment is not None:
                target = f"{self.ctx.table(f.name)}.{ident(column.name)}"
                statements.append(f"COMMENT ON COLUMN {target} IS {literal(column.comment)}")
        return (transaction(*statements, label=self.label),)

    def contract(self) -> Sequence[Group]:
        return ()

    def rollback(self) -> Sequence[Group]:
        return (transaction(f"DROP TABLE IF EXISTS {self.ctx.table(self.fields.name)}", label=self.label),)

    def tables(self) -> tuple[str, ...]:
        return (self.fields.name,)


OPERATION = CreateTable
