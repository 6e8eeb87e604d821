"""``add_column``: the column is added under its final name in the expand (old code never names it), with
its constraints in the form that takes no long lock: ``NOT NULL`` as a ``NOT VALID`` check, CHECK and
FOREIGN KEY ``NOT VALID``, UNIQUE as an index built concurrently. ``up`` fills it for the old code's
writes (a trigger) and for the rows already there (the backfill); the contract validates each constraint
in its own transaction, then ``SET NOT NULL`` (fast: the validated check proves it) and ``UNIQUE USING
INDEX``. With ``up`` equal to ``default`` (pgroll's rule for a volatile default) the default is set only by
the contract, so adding the column rewrites nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from pydantic import field_validator, model_validator

from airflow_provider_expand.engine.operations import columns, errors, fields, triggers
from airflow_provider_expand.engine.operations.base import Fields, Operation
from airflow_provider_expand.engine.operations.plan import (
    Backfill,
    Group,
    IndexBuild,
    ident,
    literal,
    transaction,
)
from airflow_provider_expand.engine.operations.schema import Index, Schema, Table


class AddColumnFields(Fields):
    table: fields.Name
    column: fields.Column
    up: str = ""

    @field_validator("up")
    @classmethod
    def _up(cls, value: str) -> str:
        return fields.check_expression(value) if value else value

    @model_validator(mode="after")
    def _no_pk(self) -> AddColumnFields:
        if self.column.pk:
            raise ValueError(
                "column.pk: adding a primary-key column is not supported; add the column, then "
                "create_constraint with type primary_key"
            )
        return self


def not_null_name(column: str) -> str:
    return f"_expand_nn_{column}"[:63]


class AddColumn(Operation[AddColumnFields]):
    name = "add_column"
    fields_model = AddColumnFields

    def check(self, schema: Schema) -> None:
        f, col = self.fields, self.fields.column
        table = self.need_table(schema, f.table, "table")
        self.need_free_column(table, col.name, "column.name")
        if not col.nullable and col.default is None and not f.up and not table.created:
            raise self.fail(
                errors.OperationError,
                "up",
                f"required: {f.table}.{col.name} is NOT NULL without a default, so the rows already there "
                "and the old code's inserts need up to fill it",
                table=f.table,
                column=col.name,
            )
        if col.references is not None and schema.table(col.references.table) is None:
            raise self.fail(
                errors.TableNotFoundError,
                "column.references.table",
                f"table {col.references.table!r} does not exist",
                table=col.references.table,
            )
        self.before: Table = copy.deepcopy(table)  # the old version's columns: what up can read
        table.add_column(columns.model_column(col))
        if col.unique:
            name = columns.unique_name(table.name, col.name)
            table.indexes[name] = Index(name, (col.name,), True, "", constraint=name)
            table.constraints[name] = columns.model_constraint(name, "u", (col.name,), "")

    # -- what the phases need ---------------------------------------------------------------------

    @property
    def _late_default(self) -> bool:
        """pgroll's volatile-default path: ``up`` equal to ``default``: set the default at the contract."""
        col = self.fields.column
        return (
            col.default is not None and bool(self.fields.up) and self.fields.up.strip() == col.default.strip()
        )

    @property
    def _not_null_check(self) -> bool:
        """NOT NULL is enforced by a NOT VALID check until the contract (no scan under a lock)."""
        col = self.fields.column
        return not col.nullable and (col.default is None or self._late_default) and not self.before.created

    def _trigger(self) -> triggers.TriggerSQL | None:
        if not self.fields.up:
            return None
        return triggers.column_trigger(
            self.ctx,
            table=self.before.physical,
            column=self.fields.column.name,
            expression=self.fields.up,
            direction="up",
            variables={c.name: c.physical for c in self.before.columns.values()},
        )

    @property
    def _table(self) -> str:
        return self.ctx.table(self.before.physical)

    def expand(self) -> Sequence[Group]:
        col, table = self.fields.column, self._table
        created = self.before.created
        definition = columns.definition(
            col,
            default=not self._late_default,
            not_null=not self._not_null_check and (created or col.default is not None),
        )
        statements = [f"ALTER TABLE {table} ADD COLUMN {definition}"]
        if self._not_null_check:
            statements.append(
                f"ALTER TABLE {table} ADD CONSTRAINT {ident(not_null_name(col.name))} "
                f"CHECK ({ident(col.name)} IS NOT NULL) NOT VALID"
            )
        valid = "" if created else " NOT VALID"
        if col.check is not None:
            statements.append(
                f"ALTER TABLE {table} ADD CONSTRAINT {ident(col.check.name)} CHECK ({col.check.constraint})"
                + (" NO INHERIT" if col.check.no_inherit else "")
                + valid
            )
        if col.references is not None:
            statements.append(
                f"ALTER TABLE {table} ADD CONSTRAINT {ident(col.references.name)} FOREIGN KEY ({ident(col.name)}) "
                + columns.references_sql(col.references, self.ctx.schema)
                + valid
            )
        if col.comment is not None:
            statements.append(f"COMMENT ON COLUMN {table}.{ident(col.name)} IS {literal(col.comment)}")
        trigger = self._trigger()
        if trigger is not None:
            statements += trigger.create
        return (transaction(*statements, label=self.label),)

    def backfills(self) -> Sequence[Backfill]:
        if not self.fields.up or self.before.created:
            return ()
        return (Backfill(table=self.fields.table, physical=self.before.physical),)

    def indexes(self) -> Sequence[IndexBuild]:
        col = self.fields.column
        if not col.unique:
            return ()
        return (
            IndexBuild(
                name=columns.unique_name(self.fields.table, col.name),
                table=f"{self.ctx.schema}.{self.before.physical}",
                columns=(col.name,),
                unique=True,
            ),
        )

    def contract(self) -> Sequence[Group]:
        col, table = self.fields.column, self._table
        groups: list[Group] = []
        trigger = self._trigger()
        if trigger is not None:
            groups.append(transaction(*trigger.drop, label=self.label))
        created = self.before.created
        if not created:
            for name in [c.name for c in (col.check, col.references) if c is not None]:
                groups.append(
                    transaction(f"ALTER TABLE {table} VALIDATE CONSTRAINT {ident(name)}", label=self.label)
                )
        if self._late_default:
            groups.append(
                transaction(
                    f"ALTER TABLE {table} ALTER COLUMN {ident(col.name)} SET DEFAULT {col.default}",
                    label=self.label,
                )
            )
        if self._not_null_check:
            check = ident(not_null_name(col.name))
            groups.append(transaction(f"ALTER TABLE {table} VALIDATE CONSTRAINT {check}", label=self.label))
            groups.append(
                transaction(
                    f"ALTER TABLE {table} ALTER COLUMN {ident(col.name)} SET NOT NULL",
                    f"ALTER TABLE {table} DROP CONSTRAINT {check}",
                    label=self.label,
                )
            )
        if col.unique:
            name = ident(columns.unique_name(self.fields.table, col.name))
            groups.append(
                transaction(
                    f"ALTER TABLE {table} ADD CONSTRAINT {name} UNIQUE USING INDEX {name}", label=self.label
                )
            )
        return tuple(groups)

    def rollback(self) -> Sequence[Group]:
        trigger = self._trigger()
        statements = list(trigger.drop) if trigger is not None else []
        # the column's constraints and its unique index go with it
        statements.append(f"ALTER TABLE {self._table} DROP COLUMN IF EXISTS {ident(self.fields.column.name)}")
        return (transaction(*statements, label=self.label),)

    def tables(self) -> tuple[str, ...]:
        tables = [self.fields.table]
        if self.fields.column.references is not None:
            tables.append(self.fields.column.references.table)
        return tuple(tables)

    def backfill_tables(self) -> tuple[str, ...]:
        return (self.fields.table,) if self.fields.up else ()

    def index_names(self) -> tuple[str, ...]:
        col = self.fields.column
        return (columns.unique_name(self.fields.table, col.name),) if col.unique else ()


OPERATION = AddColumn
