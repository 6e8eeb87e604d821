"""A pgroll column as SQL and as a schema-model column: what create_table and add_column share."""

from __future__ import annotations

from airflow_provider_expand.engine.operations import fields
from airflow_provider_expand.engine.operations.plan import ident
from airflow_provider_expand.engine.operations.schema import Column, Constraint


def references_sql(ref: fields.ForeignKeyReference, schema: str) -> str:
    """``REFERENCES "public"."t" ("c") MATCH ... ON DELETE ... ON UPDATE ...`` (defaults left out)."""
    out = f"REFERENCES {ident(schema, ref.table)} ({ident(ref.column)})"
    if ref.match_type != "SIMPLE":
        out += f" MATCH {ref.match_type}"
    if ref.on_delete != "NO ACTION":
        out += f" ON DELETE {ref.on_delete}"
    if ref.on_update != "NO ACTION":
        out += f" ON UPDATE {ref.on_update}"
    if ref.deferrable:
        out += " DEFERRABLE"
        if ref.initially_deferred:
            out += " INITIALLY DEFERRED"
    return out


def generated_sql(column: fields.Column) -> str:
    generated = column.generated
    if generated is None:
        return ""
    if generated.identity is not None:
        options = generated.identity.sequence_options.strip()
        return f" GENERATED {generated.identity.user_specified_values} AS IDENTITY" + (
            f" ({options})" if options else ""
        )
    return f" GENERATED ALWAYS AS ({generated.expression}) STORED"


def definition(column: fields.Column, *, default: bool = True, not_null: bool = True) -> str:
    """``"name" type [GENERATED ...] [DEFAULT ...] [NOT NULL]``: the column alone, constraints apart."""
    out = f"{ident(column.name)} {column.type}{generated_sql(column)}"
    if default and column.default is not None:
        out += f" DEFAULT {column.default}"
    if not_null and not column.nullable and not column.pk:
        out += " NOT NULL"
    return out


def model_column(column: fields.Column, *, physical: str | None = None) -> Column:
    """The schema-model column ``column`` becomes (types as written: the views do not need them)."""
    return Column(
        name=column.name,
        physical=physical or column.name,
        type=column.type,
        nullable=column.nullable and not column.pk,
        default=column.default,
        comment=column.comment,
        identity="" if column.generated is None or column.generated.identity is None else "a",
        generated=column.generated is not None and column.generated.identity is None,
    )


def model_constraint(name: str, kind: str, columns: tuple[str, ...], text: str) -> Constraint:
    return Constraint(name=name, type=kind, columns=columns, definition=text)  # type: ignore[arg-type]


def unique_name(table: str, column: str) -> str:
    """PostgreSQL's own name for a one-column UNIQUE constraint (``<table>_<column>_key``)."""
    return f"{table}_{column}_key"[:63]
