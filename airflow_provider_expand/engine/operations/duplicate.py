"""The duplicated-column approach: how ``alter_column``, ``create_constraint`` and the ``drop_*constraint``
operations change columns that old code keeps writing.

Each changed column gets a second physical column ``_expand_new_<column>`` with the new shape, which the
versioned views show under the final name. Triggers keep both in step (:mod:`.triggers`), the backfill
fills the rows from before the expand, and the contract drops the old column, finishes the constraints
the safe way and leaves the planner's rename pass to give the new column its name:

- ``NOT NULL``: a ``CHECK (col IS NOT NULL) NOT VALID`` during the soak (new code's writes are checked at
  once), ``VALIDATE`` in its own transaction, then ``SET NOT NULL`` (which uses the validated check and
  does not scan) and the check dropped;
- ``CHECK`` and ``FOREIGN KEY``: ``NOT VALID`` during the soak, ``VALIDATE`` in its own transaction;
- ``UNIQUE``: a unique index built ``CONCURRENTLY`` by the index builder after the backfill, then
  ``ADD CONSTRAINT ... UNIQUE USING INDEX`` (a catalog change, no scan).

The old column's other constraints and plain indexes are carried to the new column (under temporary
names until the contract renames them back), so the contract loses nothing the table had.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from airflow_provider_expand.engine.operations import errors
from airflow_provider_expand.engine.operations.base import MARKER_COLUMN, Operation
from airflow_provider_expand.engine.operations.carry import Carrying
from airflow_provider_expand.engine.operations.plan import (
    Backfill,
    Group,
    IndexBuild,
    autocommit,
    ident,
    literal,
    transaction,
)
from airflow_provider_expand.engine.operations.schema import Column, Constraint, Schema, Table
from airflow_provider_expand.engine.operations.triggers import (
    ExpressionError,
    bounded_name,
    duplicate_fills,
    fill_sql,
    parse_expression,
    rename_columns,
)

AddedKind = Literal["check", "unique", "foreign_key"]
_PREFIX = "_expand_"  # the physical names of this provider's copies


@dataclass(frozen=True)
class Shape:
    """The new shape of one column: what changes (None / not ``*_set``: kept) and how values cross over."""

    column: str  # its name before the operation
    up: str | None  # old row -> new value (default: the column itself)
    down: str | None  # new row -> old value (default: the column under its new name)
    up_field: str = "up"  # where the expressions came from, for errors
    down_field: str = "down"
    name: str | None = None  # a new name
    type: str | None = None
    nullable: bool | None = None
    default: str | None = None
    default_set: bool = False
    comment: str | None = None
    comment_set: bool = False


@dataclass(frozen=True)
class Added:
    """A constraint the operation adds over new columns (``columns``: their names before the operation)."""

    name: str
    kind: AddedKind
    columns: tuple[str, ...]
    field: str
    check: str | None = None
    no_inherit: bool = False
    references: str | None = None  # ``REFERENCES "t" ("c") ON DELETE ...``, identifiers quoted


@dataclass
class _Column:
    shape: Shape
    old: Column
    temporary: str
    final: str
    nullable: bool
    type: str | None  # the new type, None when it stays


@dataclass
class Duplication(Carrying):
    """The plan of one operation's duplicated columns, resolved against the schema model by :meth:`resolve`."""

    op: Operation[Any]
    table: Table = field(init=False)
    columns: list[_Column] = field(default_factory=list)
    expand_sql: list[str] = field(default_factory=list)
    validations: list[str] = field(default_factory=list)  # constraints added NOT VALID, validated in contract
    not_null: list[tuple[str, str]] = field(default_factory=list)  # (temporary column, its check)
    unique: list[tuple[str, str]] = field(default_factory=list)  # (constraint name, index name)
    renames: list[str] = field(default_factory=list)  # contract statements giving carried objects their names
    index_builds: list[IndexBuild] = field(default_factory=list)
    fills: list[tuple[str, ...]] = field(default_factory=list)  # (create..., drop...) per trigger
    drops: list[tuple[str, ...]] = field(default_factory=list)
    added_columns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    expand_indexes: list[str] = field(default_factory=list)  # autocommit CONCURRENTLY statements

    # -- validation and the model --------------------------------------------------------------

    def resolve(
        self,
        schema: Schema,
        table_name: str,
        shapes: Sequence[Shape],
        added: Sequence[Added] = (),
        dropped: frozenset[str] = frozenset(),
    ) -> None:
        op, ctx = self.op, self.op.ctx
        self.table = table = op.need_table(schema, table_name, "table")
        before = copy.deepcopy(table)
        old_vars = {name: c.physical for name, c in before.columns.items()}
        for shape in shapes:
            self.columns.append(self._column(schema, table, shape))
        renames = {c.old.physical: c.temporary for c in self.columns}
        qualified = ctx.table(table.physical)
        for c in self.columns:
            shape, type_ = c.shape, c.type or c.old.type
            default = shape.default if shape.default_set else c.old.default
            if not shape.default_set and default is not None and c.type is not None:
                default = f"CAST(({default}) AS {c.type})"  # the old default, in the new type
            comment = shape.comment if shape.comment_set else c.old.comment
            self.expand_sql.append(f"ALTER TABLE {qualified} ADD COLUMN {ident(c.temporary)} {type_}")
            if default is not None:  # after ADD COLUMN, so a volatile default never rewrites the table
                self.expand_sql.append(
                    f"ALTER TABLE {qualified} ALTER COLUMN {ident(c.temporary)} SET DEFAULT {default}"
                )
            if comment is not None:
                self.expand_sql.append(
                    f"COMMENT ON COLUMN {qualified}.{ident(c.temporary)} IS {literal(comment)}"
                )
            if not c.nullable:
                check = bounded_name("notnull", table.physical, c.old.physical)
                self.expand_sql.append(
                    f"ALTER TABLE {qualified} ADD CONSTRAINT {ident(check)} "
                    f"CHECK ({ident(c.temporary)} IS NOT NULL) NOT VALID"
                )
                self.validations.append(check)
                self.not_null.append((c.temporary, check))
        self._carry(schema, before, renames, dropped)
        for item in added:
            self._add(schema, before, item, renames)
        self._triggers(before, old_vars)
        self._update_model(table, dropped, added)

    def _column(self, schema: Schema, table: Table, shape: Shape) -> _Column:
        op = self.op
        old = op.need_column(table, shape.column, "column")
        where = {"table": table.name, "column": old.name}
        if old.physical in table.primary_key:
            raise op.fail(
                errors.UnsupportedError,
                "column",
                f"column {old.name!r} of table {table.name!r} is in the primary key; a duplicated column cannot "
                "replace a key column (foreign keys point at it): use a sql operation",
                **where,
            )
        if old.identity or old.generated:
            raise op.fail(
                errors.UnsupportedError,
                "column",
                f"column {old.name!r} of table {table.name!r} is an identity or generated column, which old "
                "code cannot write through a copy: use a sql operation",
                **where,
            )
        if old.physical.startswith(_PREFIX):
            raise op.fail(
                errors.ConflictError,
                "column",
                f"column {old.name!r} of table {table.name!r} is already being changed by an earlier operation "
                "of this migration; put both changes in one operation, or in two migrations",
                **where,
            )
        temporary = bounded_name("new", old.physical)
        op.need_free_column(table, temporary, "column")
        final = shape.name or old.name
        if final != old.name:
            op.need_free_column(table, final, "name")
        nullable = old.nullable if shape.nullable is None else shape.nullable
        retype = shape.type if shape.type and " ".join(shape.type.lower().split()) != old.type else None
        return _Column(shape=shape, old=old, temporary=temporary, final=final, nullable=nullable, type=retype)

    def _expression(self, text: str, field: str, column: str, names: Mapping[str, str] | None = None) -> str:
        """``text`` parsed; with ``names`` (the columns its version has), an unknown column is an error too
        (unless a subquery could be the one naming it)."""
        try:
            expression = parse_expression(text)
        except ExpressionError as exc:
            raise self.op.fail(
                errors.ExpressionError, field, str(exc), table=self.table.name, column=column
            ) from exc
        unknown = sorted(expression.columns - set(names or ())) if names is not None else []
        if unknown and not expression.subquery:
            raise self.op.fail(
                errors.ExpressionError,
                field,
                f"names {unknown[0]!r}, which is not a column of table {self.table.name!r} in the version this "
                f"expression reads (columns: {', '.join(names or ())})",
                table=self.table.name,
                column=column,
            )
        return expression.text

    def _unique_index(self, name: str, columns: Sequence[str]) -> IndexBuild:
        """The index task of a UNIQUE the operation adds (``schema.table``, as the index builder names it)."""
        table = f"{self.op.ctx.schema}.{self.table.physical}"
        return IndexBuild(name=name, table=table, columns=tuple(columns), unique=True)

    def _add(self, schema: Schema, before: Table, item: Added, renames: Mapping[str, str]) -> None:
        op, qualified = self.op, self.op.ctx.table(before.physical)
        if item.name in before.constraints or item.name in schema.relation_names():
            raise op.fail(
                errors.IndexExistsError,
                item.field,
                f"a constraint or relation named {item.name!r} already exists (table {before.name!r})",
                table=before.name,
            )
        physical = [renames.get(before.columns[c].physical, before.columns[c].physical) for c in item.columns]
        self.added_columns[item.name] = tuple(physical)
        if item.kind == "unique":
            self.index_builds.append(self._unique_index(item.name, physical))
            self.unique.append((item.name, item.name))
            return
        if item.kind == "check":
            assert item.check is not None
            # written with the new version's names: each column to its physical column during the soak
            names = {c.final: c.temporary for c in self.columns} | {
                n: c.physical
                for n, c in before.columns.items()
                if n not in {x.old.name for x in self.columns}
            }
            try:
                expression = rename_columns(parse_expression(item.check), names).text
            except ExpressionError as exc:
                raise op.fail(errors.ExpressionError, item.field, str(exc), table=before.name) from exc
            inherit = " NO INHERIT" if item.no_inherit else ""
            definition = f"CHECK {expression}{inherit}"
        else:
            definition = f"FOREIGN KEY ({', '.join(ident(p) for p in physical)}) {item.references}"
        self.expand_sql.append(
            f"ALTER TABLE {qualified} ADD CONSTRAINT {ident(item.name)} {definition} NOT VALID"
        )
        self.validations.append(item.name)

    def _triggers(self, before: Table, old_vars: Mapping[str, str]) -> None:
        ctx = self.op.ctx
        new_vars = dict(old_vars)
        for c in self.columns:
            new_vars.pop(c.old.name, None)
            new_vars[c.final] = c.temporary
        for c in self.columns:
            up = c.shape.up if c.shape.up is not None else ident(c.old.name)
            down = c.shape.down if c.shape.down is not None else ident(c.final)
            self._expression(up, c.shape.up_field, c.old.name, old_vars)
            self._expression(down, c.shape.down_field, c.old.name, new_vars)
            upward, downward = duplicate_fills(
                schema=ctx.schema,
                table=before.physical,
                old_column=c.old.physical,
                new_column=c.temporary,
                up=parse_expression(up),
                down=parse_expression(down),
                old_columns=old_vars,
                new_columns=new_vars,
                versioned_schema=ctx.version_schema,
                marker=MARKER_COLUMN,
            )
            for fill in (downward, upward):
                trigger = fill_sql(fill)
                self.fills.append(trigger.create)
                self.drops.append(trigger.drop)

    def _update_model(self, table: Table, dropped: frozenset[str], added: Sequence[Added]) -> None:
        replaced = {c.old.name: c for c in self.columns}
        columns: dict[str, Column] = {}
        for name, column in table.columns.items():
            c = replaced.get(name)
            if c is None:
                columns[name] = column
                continue
            shape = c.shape
            columns[c.final] = Column(
                name=c.final,
                physical=c.temporary,
                type=c.type or column.type,
                nullable=c.nullable,
                default=shape.default if shape.default_set else column.default,
                comment=shape.comment if shape.comment_set else column.comment,
            )
        table.columns = columns
        moved = {c.old.physical: c.temporary for c in self.columns}
        for name in dropped:
            table.constraints.pop(name, None)
        for con in table.constraints.values():
            con.columns = tuple(moved.get(x, x) for x in con.columns)
        for index in table.indexes.values():
            index.columns = tuple(moved.get(x, x) for x in index.columns)
        types: dict[AddedKind, Literal["c", "u", "f"]] = {"check": "c", "unique": "u", "foreign_key": "f"}
        for item in added:
            cols = self.added_columns[item.name]
            table.constraints[item.name] = Constraint(item.name, types[item.kind], cols, "", validated=True)

    # -- the phases ------------------------------------------------------------------------------

    def expand(self) -> list[Group]:
        statements = [*self.expand_sql, *(s for create in self.fills for s in create)]
        return [
            transaction(*statements, label=self.op.label),
            *(autocommit(s, label=self.op.label) for s in self.expand_indexes),
        ]

    def backfills(self) -> list[Backfill]:
        return [Backfill(table=self.table.name, physical=self.table.physical)]

    def indexes(self) -> list[IndexBuild]:
        return list(self.index_builds)

    def contract(self) -> list[Group]:
        label, qualified = self.op.label, self.op.ctx.table(self.table.physical)
        # Old code is gone once the contract starts, but new code still writes through the views until
        # the old columns go: the down triggers keep filling them (a NOT NULL old column refused new
        # code's inserts from the triggers' drop to the columns' drop), so both go in one transaction.
        groups = [
            transaction(f"ALTER TABLE {qualified} VALIDATE CONSTRAINT {ident(name)}", label=label)
            for name in self.validations
        ]
        if self.not_null:
            groups.append(
                transaction(
                    *(
                        s
                        for column, check in self.not_null
                        for s in (
                            f"ALTER TABLE {qualified} ALTER COLUMN {ident(column)} SET NOT NULL",
                            f"ALTER TABLE {qualified} DROP CONSTRAINT {ident(check)}",
                        )
                    ),
                    label=label,
                )
            )
        final = [
            *(s for drop in self.drops for s in drop),
            *(f"ALTER TABLE {qualified} DROP COLUMN {ident(c.old.physical)}" for c in self.columns),
            *(
                f"ALTER TABLE {qualified} ADD CONSTRAINT {ident(name)} UNIQUE USING INDEX {ident(index)}"
                for name, index in self.unique
            ),
            *self.renames,
        ]
        groups.append(transaction(*final, label=label))
        return groups

    def rollback(self) -> list[Group]:
        qualified = self.op.ctx.table(self.table.physical)
        statements = [
            *(s for drop in self.drops for s in drop),
            *(f"ALTER TABLE {qualified} DROP COLUMN IF EXISTS {ident(c.temporary)}" for c in self.columns),
        ]
        return [transaction(*statements, label=self.op.label)]
