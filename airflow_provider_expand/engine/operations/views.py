"""The versioned schema (pgroll's approach): ``CREATE SCHEMA "<migration_id>"`` with one view per table that
shows the new shape under the final names. The new code sets ``search_path`` to it; the old code keeps the
tables. Simple one-table views are updatable, so the new code writes through them; ``security_invoker``
keeps the table's privileges and row-level security in force for the application's role (PostgreSQL 15+).
"""

from __future__ import annotations

from airflow_provider_expand.engine.operations.base import PlanContext
from airflow_provider_expand.engine.operations.plan import Group, ident, literal, transaction
from airflow_provider_expand.engine.operations.schema import VERSION_SCHEMA_COMMENT, Schema


def schema_comment(ctx: PlanContext) -> str:
    """What marks a schema as ours (and over which schema its views are), read back by ``schema.read_schema``."""
    return f"{VERSION_SCHEMA_COMMENT} of migration {ctx.migration_id} over {ctx.schema}"


def create_views(model: Schema, ctx: PlanContext) -> Group:
    """The version schema and its views, from the schema model as the last operation left it."""
    version = ident(ctx.version_schema)
    statements = [
        f"CREATE SCHEMA {version}",
        f"COMMENT ON SCHEMA {version} IS {literal(schema_comment(ctx))}",
    ]
    for table in sorted(model.tables.values(), key=lambda t: t.name):
        select = ", ".join(
            ident(c.physical) if c.physical == c.name else f"{ident(c.physical)} AS {ident(c.name)}"
            for c in table.columns.values()
        )
        statements.append(
            f"CREATE VIEW {ident(ctx.version_schema, table.name)} WITH (security_invoker = true) AS "
            f"SELECT {select} FROM {ctx.table(table.physical)}"
        )
    return transaction(*statements, label="version schema")


def drop_views(ctx: PlanContext, schema: str | None = None) -> Group:
    """Drop a version schema and its views (this migration's by default)."""
    name = schema or ctx.version_schema
    allow = (
        "-- expand: allow EX104 because it is this migration's version schema, which only holds the views the "
        "expand created (after an isolated sql operation they are read from the catalog)\n"
        if schema is None
        else ""
    )
    return transaction(f"{allow}DROP SCHEMA IF EXISTS {ident(name)} CASCADE", label=f"version schema {name}")
