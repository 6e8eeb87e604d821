"""A migration's operations -> one :class:`MigrationPlan`, validated in order against one schema model.

Around the operations' own groups the planner adds what belongs to the migration as a whole:

- expand: the operations' groups, the backfill marker of each table that needs a backfill, then the
  version schema of views built from the model as the last operation left it;
- contract: drop the earlier migrations' version schemas and the markers, the operations' groups in order,
  then one rename pass (every column, then every table, whose physical name differs from the new one),
  then the ``onComplete`` sql operations (written against the final names, as in pgroll);
- rollback: drop this migration's version schema and the markers, then the operations' groups in
  reverse order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_provider_expand.engine.operations import errors
from airflow_provider_expand.engine.operations.base import MARKER_COLUMN, Fields, Operation, PlanContext
from airflow_provider_expand.engine.operations.plan import (
    Backfill,
    Group,
    MigrationPlan,
    OperationPlan,
    ident,
    transaction,
)
from airflow_provider_expand.engine.operations.registry import operation_class
from airflow_provider_expand.engine.operations.schema import Schema
from airflow_provider_expand.engine.operations.views import create_views, drop_views

Entry = tuple[str, Fields]  # (pgroll name, validated fields)
MARKER_TRIGGER = "_expand_backfill_marker"
_RENAME_ALLOWED = (
    "-- expand: allow EX102 because the new code has used the new name through the version schema's views "
    "since the expand, and the old code is gone\n"
)


def build_operations(entries: Sequence[Entry], ctx: PlanContext) -> list[Operation[Any]]:
    """The operation objects of ``entries`` (already validated by the spec)."""
    return [operation_class(name)(fields, index=i, ctx=ctx) for i, (name, fields) in enumerate(entries)]


def check_isolation(operations: Sequence[Operation[Any]]) -> None:
    """pgroll's rule: a ``sql`` operation that runs in the expand is the only operation of its migration."""
    if len(operations) < 2:
        return
    for op in operations:
        if op.isolated:
            other = next(o for o in operations if o is not op)
            raise op.fail(
                errors.ConflictError,
                "up",
                f"a sql operation without onComplete must be the only operation of its migration (it "
                f"changes the schema in ways the other operations, such as {other.label}, cannot be checked "
                "against); split the migration, or set onComplete: true",
            )


def contract_fates(operations: Sequence[Operation[Any]]) -> dict[str, str | None]:
    """Each table the contract renames or drops, by its name before the migration -> its name after it
    (None: dropped), the operations' renames and drops composed in order."""
    fates: dict[str, str | None] = {}
    for op in operations:
        for name, after in op.contract_tables().items():
            origin = next((k for k, v in fates.items() if v == name), name)
            fates[origin] = after
    return fates


def _marker_function(ctx: PlanContext, physical: str) -> str:
    return ident(ctx.schema, f"{MARKER_TRIGGER}_{physical}"[:63])


def marker_expand(ctx: PlanContext, physical: str) -> Group:
    """The marker column (true for every row already there) and the trigger that clears it on any write."""
    table, function = ctx.table(physical), _marker_function(ctx, physical)
    return transaction(
        f"ALTER TABLE {table} ADD COLUMN {ident(MARKER_COLUMN)} boolean DEFAULT true",
        f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $marker$\n"
        f"BEGIN\n  NEW.{ident(MARKER_COLUMN)} := false;\n  RETURN NEW;\nEND\n$marker$",
        f"CREATE TRIGGER {ident(MARKER_TRIGGER)} BEFORE INSERT OR UPDATE ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION {function}()",
        label=f"backfill marker of {physical}",
    )


def marker_drop(ctx: PlanContext, physical: str) -> Group:
    table, function = ctx.table(physical), _marker_function(ctx, physical)
    return transaction(
        f"DROP TRIGGER IF EXISTS {ident(MARKER_TRIGGER)} ON {table}",
        f"DROP FUNCTION IF EXISTS {function}()",
        f"ALTER TABLE {table} DROP COLUMN IF EXISTS {ident(MARKER_COLUMN)}",
        label=f"backfill marker of {physical}",
    )


def rename_pass(model: Schema, ctx: PlanContext) -> tuple[Group, ...]:
    """Renames the contract owes the model: columns first (on the table's physical name), then tables."""
    statements: list[str] = []
    for table in model.tables.values():
        for column in table.columns.values():
            if column.physical != column.name:
                statements.append(
                    f"{_RENAME_ALLOWED}ALTER TABLE {ctx.table(table.physical)} RENAME COLUMN {ident(column.physical)} "
                    f"TO {ident(column.name)}"
                )
    for table in model.tables.values():
        if table.physical != table.name:
            statements.append(
                f"{_RENAME_ALLOWED}ALTER TABLE {ctx.table(table.physical)} RENAME TO {ident(table.name)}"
            )
    return (transaction(*statements, label="renames"),) if statements else ()


def _merge_backfills(requests: Sequence[Backfill]) -> tuple[Backfill, ...]:
    """One backfill per physical table (the marker covers every operation's column on it)."""
    merged: dict[str, Backfill] = {}
    for request in requests:
        merged.setdefault(request.physical, request)
    return tuple(merged.values())


def plan_migration(operations: Sequence[Operation[Any]], schema: Schema, ctx: PlanContext) -> MigrationPlan:
    """Validate ``operations`` in order on a copy of ``schema`` and assemble every phase.

    Raises an :class:`errors.OperationError` naming the file, the operation's index and the field.
    """
    if not operations:
        raise errors.OperationError("needs at least one operation", index=0, operation="", source=ctx.source)
    check_isolation(operations)
    if len(ctx.version_schema.encode()) > 63:
        raise operations[0].fail(
            errors.ConflictError,
            "",
            f"the migration id {ctx.version_schema!r} names the version schema, and is longer than PostgreSQL's "
            "63-byte identifiers: shorten it",
        )
    if ctx.version_schema in schema.schemas:
        raise operations[0].fail(
            errors.ConflictError,
            "",
            f"the version schema {ctx.version_schema!r} (named after the migration) already exists in the "
            "database: drop it, or give the migration another id",
        )
    model = schema.copy()
    for op in operations:
        op.validate(model)
    per_op = tuple(
        OperationPlan(
            label=op.label,
            expand=tuple(op.expand()),
            backfills=tuple(op.backfills()),
            indexes=tuple(op.indexes()),
            contract=tuple(op.contract()),
            rollback=tuple(op.rollback()),
        )
        for op in operations
    )
    backfills = _merge_backfills([b for p in per_op for b in p.backfills])
    markers = [b.physical for b in backfills]
    isolated = any(op.isolated for op in operations)
    # the markers after the operations' groups: a row the old code writes before its up trigger exists must
    # not be marked done (it would never be backfilled); rows written after the trigger are filled by it,
    # and marking them again only makes the backfill compute the same value
    expand = [g for p in per_op for g in p.expand] + [marker_expand(ctx, t) for t in markers]
    if not isolated:  # after an isolated sql operation the views are built from the catalog (refresh_views)
        expand.append(create_views(model, ctx))
    contract = [drop_views(ctx, s) for s in schema.version_schemas if s != ctx.version_schema]
    contract += [marker_drop(ctx, t) for t in markers]
    late = [op.after_renames for op in operations]
    contract += [g for p, after in zip(per_op, late, strict=True) if not after for g in p.contract]
    contract += rename_pass(model, ctx)
    contract += [g for p, after in zip(per_op, late, strict=True) if after for g in p.contract]
    rollback = [drop_views(ctx)] + [marker_drop(ctx, t) for t in markers]
    rollback += [g for p in reversed(per_op) for g in p.rollback]
    return MigrationPlan(
        migration_id=ctx.migration_id,
        version_schema=ctx.version_schema,
        expand=tuple(expand),
        backfills=backfills,
        indexes=tuple(i for p in per_op for i in p.indexes),
        contract=tuple(contract),
        rollback=tuple(rollback),
        operations=per_op,
        refresh_views=isolated,
    )
