"""The triggers that keep two versions of a column in step while old and new code run side by side.

An operation that gives a column a new shape (``alter_column``, ``create_constraint``, ``add_column`` with
``up``) keeps the old physical column for old code and a second physical column for new code, which the
versioned schema's view shows under the final name. Each write must reach both: a ``BEFORE INSERT OR
UPDATE`` row trigger computes the other column from the one its writer filled, with the migration's
``up`` (old code wrote) or ``down`` (new code wrote) expression.

**Which version wrote.** New code is a session whose ``search_path`` resolves unqualified table names to
the migration's versioned schema, i.e. that schema comes before the table's own schema in
``current_schemas(false)``; every other session (old code, the backfill, the DDL runner) is old code.
That is exactly the condition under which the session sees the view rather than the table, so it is the
condition under which its writes are new-shape writes; the docs tell new code to set ``search_path`` and
use unqualified names. Unlike pgroll's exact comparison of the whole ``search_path`` string, extra schemas
in the path (``versioned, public, extensions``) do not change the answer.

**No recursion.** The triggers only assign to ``NEW``; they run no statement, so no write triggers another,
and only one direction acts on a given write (the two writer checks are complements).

**Rows the backfill has not reached.** The table's marker column (the planner's "needs backfill" flag)
says which rows still hold no new-shape value. An up fill computes it for such a row whenever any version
touches it (unless new code wrote the column itself), and the planner's marker trigger clears the flag on
every write, so a new-code update of an old row never meets an empty column (a ``NOT NULL`` check on it
would refuse the write), and the backfill skips every row written since the expand. The flag is read
through ``to_jsonb(OLD)``, so a fill works whether the marker column exists yet (or still) or not: without
it old code's writes always compute (in the expand any row may be unfilled) and new code never fills.

**Only when the source changed.** On ``UPDATE`` the expression runs again only when a column it reads
changed, so a nondeterministic ``up`` (pgroll's own example appends ``random()``) is not re-rolled by an
unrelated update, and a value the other version wrote is not overwritten by a recomputation.

Expressions reach PL/pgSQL as pglast's deparse of their parse tree (never the text as written), as one
parenthesised scalar expression; each column of the writer's version is a PL/pgSQL variable named after
that version's column, so an expression is written with the names its writer's code uses, as in pgroll.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pglast import ast
from pglast.enums import SetOperation
from pglast.stream import RawStream
from psycopg import sql

from airflow_provider_expand.engine.operations.base import MARKER_COLUMN, PlanContext
from airflow_provider_expand.engine.statements import FragmentError, _walk, parse_fragment

Direction = Literal["up", "down"]  # up: old code wrote, fill the new column; down: new code wrote
MAX_IDENTIFIER = 63  # NAMEDATALEN - 1
_PREFIX = "_expand_"


class ExpressionError(ValueError):
    """An ``up`` / ``down`` / ``check`` expression that is not one scalar SQL expression."""


@dataclass(frozen=True)
class Expression:
    """One scalar SQL expression, parsed: ``text`` is the deparsed tree (what is ever run), ``columns``
    the unqualified column names it reads."""

    text: str
    columns: frozenset[str]
    subquery: bool = False  # a subquery's names may be another table's columns


def parse_expression(source: str) -> Expression:
    """``source`` as one scalar expression; pgroll's ``SELECT CASE ...`` style counts as a scalar subquery.

    It is parsed as ``SELECT (<source>)`` and must stay exactly one target with no other clause, so a
    ``)`` cannot close the parenthesis early and smuggle a ``FROM``, a second target or a second
    statement into the trigger.
    """
    if not source or not source.strip():
        raise ExpressionError("must be a SQL expression, not empty")
    try:
        node = parse_fragment(f"SELECT ({source})")
    except FragmentError as exc:
        raise ExpressionError(str(exc)) from exc
    if node is None or not isinstance(node, ast.SelectStmt):
        raise ExpressionError("must be one SQL expression, not several statements")
    extra = [f for f in node if f not in {"targetList", "op", "all", "groupDistinct", "limitOption"}]
    if (
        any(getattr(node, f) for f in extra)
        or node.op != SetOperation.SETOP_NONE
        or node.targetList is None
        or len(node.targetList) != 1
        or node.targetList[0].name
    ):
        raise ExpressionError("must be one SQL expression, without other clauses")
    value = node.targetList[0].val
    names = frozenset(name for n in _walk(value) if (name := _plain_column(n)) is not None)
    subquery = any(isinstance(n, ast.SubLink) for n in _walk(value))
    return Expression(text=f"({RawStream()(value)})", columns=names, subquery=subquery)


def _plain_column(node: object) -> str | None:
    """The name of an unqualified column reference (``title``, not ``posts.title``), else None."""
    if isinstance(node, ast.ColumnRef) and node.fields and len(node.fields) == 1:
        field = node.fields[0]
        if isinstance(field, ast.String):
            return str(field.sval)
    return None


def rename_columns(expression: Expression, renames: Mapping[str, str]) -> Expression:
    """``expression`` with its unqualified references to ``renames``' keys pointing at their values:
    a ``CHECK`` written for ``title`` placed on the temporary column that will become ``title``."""
    node = parse_fragment(f"SELECT {expression.text}")
    assert isinstance(node, ast.SelectStmt) and node.targetList  # it came from parse_expression
    value = node.targetList[0].val
    for ref in _walk(value):
        name = _plain_column(ref)
        if name is not None and name in renames:
            ref.fields = (ast.String(sval=renames[name]),)
    return parse_expression(RawStream()(value))


def bounded_name(*parts: str) -> str:
    """``_expand_<parts joined by _>``, shortened with a digest when longer than PostgreSQL keeps, so two
    long names never collide after truncation."""
    name = _PREFIX + "_".join(parts)
    if len(name) <= MAX_IDENTIFIER:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: MAX_IDENTIFIER - 9]}_{digest}"


def trigger_name(direction: Direction, table: str, column: str) -> str:
    """The trigger (and its function) that fills ``column`` of ``table``: ``_expand_<direction>_<t>_<c>``."""
    return bounded_name(direction, table, column)


def new_code_test(ctx: PlanContext) -> str:
    """The PL/pgSQL condition true in a session of the new code (see the module docstring)."""
    return new_code_session(ctx.version_schema, ctx.schema).as_string(None)


def new_code_session(versioned_schema: str, table_schema: str) -> sql.Composable:
    """True in a session whose unqualified names resolve to ``versioned_schema`` before ``table_schema``."""
    return sql.SQL(
        "coalesce(array_position(current_schemas(false), {v}::name)"
        " < coalesce(array_position(current_schemas(false), {t}::name), 2147483647), false)"
    ).format(v=sql.Literal(versioned_schema), t=sql.Literal(table_schema))


@dataclass(frozen=True)
class ColumnFill:
    """Fill ``target`` (a physical column) with ``expression`` on the writes ``direction`` stands for.

    ``columns`` maps every column name of the writer's version of the row to its physical column; the
    expression is written with those names. ``marker`` is the table's "not yet backfilled" flag column:
    an old-code fill (``up``) also fills the rows the backfill has not reached yet when any version
    touches them (the planner's marker trigger clears the flag), so a row is complete after every write.
    """

    schema: str
    table: str
    target: str
    expression: Expression
    columns: Mapping[str, str]
    direction: Direction
    versioned_schema: str
    marker: str | None = None

    @property
    def trigger(self) -> str:
        return trigger_name(self.direction, self.table, self.target)


def _dollar_tag(body: str) -> str:
    n = 0
    while f"$expand{n}$" in body:
        n += 1
    return f"$expand{n}$"


def _changed(physical: list[str]) -> sql.Composable:
    """True when one of ``physical`` differs between OLD and NEW (always on INSERT)."""
    if not physical:
        return sql.SQL("TG_OP = 'INSERT'")
    new_row = sql.SQL(", ").join(sql.SQL("NEW.{}").format(sql.Identifier(c)) for c in physical)
    old_row = sql.SQL(", ").join(sql.SQL("OLD.{}").format(sql.Identifier(c)) for c in physical)
    return sql.SQL("TG_OP = 'INSERT' OR ROW({}) IS DISTINCT FROM ROW({})").format(new_row, old_row)


def _body(fill: ColumnFill) -> sql.Composable:
    target = sql.Identifier(fill.target)
    assign = sql.SQL("NEW.{} := {};").format(target, sql.SQL(fill.expression.text))  # the deparsed tree
    is_new = new_code_session(fill.versioned_schema, fill.schema)
    changed = _changed(sorted(fill.columns[c] for c in fill.expression.columns if c in fill.columns))
    if fill.direction == "down":
        return sql.SQL("  IF {is_new} AND ({changed}) THEN\n    {assign}\n  END IF;\n").format(
            is_new=is_new, changed=changed, assign=assign
        )
    if fill.marker is None:
        return sql.SQL("  IF NOT {is_new} AND ({changed}) THEN\n    {assign}\n  END IF;\n").format(
            is_new=is_new, changed=changed, assign=assign
        )
    # Read through to_jsonb, so the trigger works while the marker column does not exist: in the expand
    # before the planner adds it, every row may still be unfilled (old code's writes always compute); in the
    # contract or rollback after it dropped it, the backfill is done or moot (new code never fills lazily).
    # Only evaluated when the cheaper tests before it in the condition did not decide.
    flag = sql.SQL("(to_jsonb(OLD) ->> {})::boolean").format(sql.Literal(fill.marker))
    return sql.SQL(
        "  IF NOT {is_new} THEN\n"
        "    IF {changed} OR coalesce({flag}, true) THEN\n      {assign}\n    END IF;\n"
        "  ELSIF TG_OP = 'UPDATE' AND NEW.{target} IS NOT DISTINCT FROM OLD.{target} AND coalesce({flag}, false) THEN\n"
        "    -- new code touched a row the backfill has not reached: fill it as the backfill would\n"
        "    {assign}\n"
        "  END IF;\n"
    ).format(is_new=is_new, changed=changed, assign=assign, flag=flag, target=target)


def create_fill(fill: ColumnFill) -> list[str]:
    """The two statements (function, trigger) that install ``fill``; both idempotent (``OR REPLACE``).

    Triggers fire in name order, so every ``_expand_down_*`` runs before every ``_expand_up_*``: a new-code
    write reaches the old column first, and only then may an up fill complete a row not yet backfilled.
    """
    table = sql.Identifier(fill.schema, fill.table)
    declare = sql.SQL("\n").join(
        sql.SQL("  {var} {table}.{phys}%TYPE := NEW.{phys};").format(
            var=sql.Identifier(name), table=table, phys=sql.Identifier(physical)
        )
        for name, physical in fill.columns.items()
    )
    body = sql.SQL("\nDECLARE\n{declare}\nBEGIN\n{body}  RETURN NEW;\nEND\n").format(
        declare=declare, body=_body(fill)
    )
    body_text = body.as_string(None)
    tag = _dollar_tag(body_text)
    function = sql.Identifier(fill.schema, fill.trigger)
    header = sql.SQL("CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS ").format(function)
    create_trigger = sql.SQL(
        "CREATE OR REPLACE TRIGGER {name} BEFORE INSERT OR UPDATE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION {function}()"
    ).format(name=sql.Identifier(fill.trigger), table=table, function=function)
    return [header.as_string(None) + f"{tag}{body_text}{tag}", create_trigger.as_string(None)]


def drop_fill(schema: str, table: str, trigger: str) -> list[str]:
    """The statements that remove a fill: the trigger, then its function (both ``IF EXISTS``)."""
    return [
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}")
        .format(sql.Identifier(trigger), sql.Identifier(schema, table))
        .as_string(None),
        sql.SQL("DROP FUNCTION IF EXISTS {}()").format(sql.Identifier(schema, trigger)).as_string(None),
    ]


def fill_from_old_code(
    *,
    schema: str,
    table: str,
    column: str,
    up: Expression,
    old_columns: Mapping[str, str],
    versioned_schema: str,
    marker: str | None,
) -> ColumnFill:
    """A column new code sees, filled from old code's writes by ``up`` (``add_column`` with ``up``): old code
    does not know the column, so each of its inserts and updates computes it from the old row; with the
    table's backfill ``marker``, a row new code updates before the backfill reached it is filled too."""
    return ColumnFill(
        schema=schema,
        table=table,
        target=column,
        expression=up,
        columns=old_columns,
        direction="up",
        versioned_schema=versioned_schema,
        marker=marker,
    )


def duplicate_fills(
    *,
    schema: str,
    table: str,
    old_column: str,
    new_column: str,
    up: Expression,
    down: Expression,
    old_columns: Mapping[str, str],
    new_columns: Mapping[str, str],
    versioned_schema: str,
    marker: str | None,
) -> tuple[ColumnFill, ColumnFill]:
    """Both directions for a duplicated column: old code's writes fill ``new_column`` by ``up`` (written with
    ``old_columns``' names), new code's writes fill ``old_column`` by ``down`` (``new_columns``' names)."""
    upward = ColumnFill(schema, table, new_column, up, old_columns, "up", versioned_schema, marker)
    downward = ColumnFill(schema, table, old_column, down, new_columns, "down", versioned_schema)
    return upward, downward


@dataclass(frozen=True)
class TriggerSQL:
    """The statements that create a fill's trigger and function (one transaction group), and drop them."""

    name: str
    create: tuple[str, ...]
    drop: tuple[str, ...]


def fill_sql(fill: ColumnFill) -> TriggerSQL:
    return TriggerSQL(
        fill.trigger, tuple(create_fill(fill)), tuple(drop_fill(fill.schema, fill.table, fill.trigger))
    )


def column_trigger(
    ctx: PlanContext,
    *,
    table: str,
    column: str,
    expression: str,
    direction: Direction,
    variables: Mapping[str, str],
    marker: str | None = MARKER_COLUMN,
) -> TriggerSQL:
    """A ``BEFORE INSERT OR UPDATE`` row trigger on ``table`` (physical, in ``ctx.schema``) that sets
    ``column`` (physical) to ``expression`` for the writes ``direction`` stands for.

    ``variables`` maps each name ``expression`` may use to the physical column it reads. An ``up`` trigger
    uses the table's backfill ``marker`` (the planner adds it with the backfill the operation requests;
    pass None when there is none). Raises :class:`ExpressionError` for an expression that is not one.
    """
    fill = ColumnFill(
        schema=ctx.schema,
        table=table,
        target=column,
        expression=parse_expression(expression),
        columns=variables,
        direction=direction,
        versioned_schema=ctx.version_schema,
        marker=marker if direction == "up" else None,
    )
    return fill_sql(fill)
