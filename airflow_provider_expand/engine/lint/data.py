"""Rules about changing data inside a DDL phase: an UPDATE or DELETE holds every row it touches until
the phase commits (the runbook's DO-block problem), so one that is not pinned to a few rows by key, and
any data change inside a DO block, belongs in a backfill (short batches, each its own transaction).
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast
from pglast.enums import A_Expr_Kind, BoolExprType

from airflow_provider_expand.engine.lint.context import FileContext, last_name, table_name
from airflow_provider_expand.engine.lint.findings import Rule
from airflow_provider_expand.engine.lint.session import statement_nodes
from airflow_provider_expand.engine.statements import Statement

# Columns that pick one row each: a WHERE pinned to constants of one of them touches as many rows as it
# lists. Any other condition (status = 'draft', created_at < ..., name IS NULL) may match the whole table.
KEY_COLUMNS = frozenset({"id", "ctid", "uuid", "pk"})


def _conjuncts(expr: ast.Node | None) -> Iterator[ast.Node]:
    if isinstance(expr, ast.BoolExpr) and expr.boolop == BoolExprType.AND_EXPR:
        for arg in expr.args or ():
            yield from _conjuncts(arg)
    elif expr is not None:
        yield expr


def _constant(node: object) -> bool:
    while isinstance(node, ast.TypeCast):
        node = node.arg
    return isinstance(node, ast.A_Const | ast.ParamRef)


def _key_column(node: object, table: str) -> bool:
    if not isinstance(node, ast.ColumnRef):
        return False
    name = (last_name(node.fields) or "").lower()
    return name in KEY_COLUMNS or name in (f"{table}_id", f"{table.removesuffix('s')}_id")


def _pins_rows(where: ast.Node, table: str) -> bool:
    """True when one conjunct of ``where`` is ``key = constant`` or ``key IN (constants)`` (or CURRENT OF)."""
    for part in _conjuncts(where):
        if isinstance(part, ast.CurrentOfExpr):
            return True
        if not isinstance(part, ast.A_Expr):
            continue
        op = last_name(part.name)
        sides = (part.lexpr, part.rexpr)
        if part.kind == A_Expr_Kind.AEXPR_OP and op == "=":
            if any(_key_column(a, table) and _constant(b) for a, b in (sides, sides[::-1])):
                return True
        elif part.kind == A_Expr_Kind.AEXPR_IN and op == "=" and _key_column(part.lexpr, table):
            values = part.rexpr if isinstance(part.rexpr, tuple | list) else ()
            if values and all(_constant(v) for v in values):
                return True
    return False


def _whole_table(statement: Statement, ctx: FileContext) -> Iterator[str]:
    node = statement.node
    if (
        isinstance(node, ast.UpdateStmt | ast.DeleteStmt)
        and node.whereClause is None
        and not ctx.is_new_table(node.relation)
    ):
        verb = "updates" if isinstance(node, ast.UpdateStmt) else "deletes"
        yield (
            f"{verb} every row of {table_name(node.relation)} in one transaction of the {ctx.phase} phase: "
            "each row stays locked until the phase commits"
        )


def _many_rows(statement: Statement, ctx: FileContext) -> Iterator[str]:
    node = statement.node
    if (
        isinstance(node, ast.UpdateStmt | ast.DeleteStmt)
        and node.whereClause is not None
        and not ctx.is_new_table(node.relation)
    ):
        table = table_name(node.relation)
        if not _pins_rows(node.whereClause, table):
            verb = "updates" if isinstance(node, ast.UpdateStmt) else "deletes"
            yield (
                f"{verb} the rows of {table} its WHERE matches, as many as that is (nothing pins it to a few "
                f"rows by key), in one transaction of the {ctx.phase} phase: each stays locked until it commits"
            )


def _copies_rows(node: ast.InsertStmt) -> bool:
    select = node.selectStmt
    return isinstance(select, ast.SelectStmt) and bool(select.fromClause)


def _dml_in_do(statement: Statement, ctx: FileContext) -> Iterator[str]:
    seen: set[str] = set()
    for where, node in statement_nodes(statement):
        if not where or not isinstance(node, ast.UpdateStmt | ast.DeleteStmt | ast.InsertStmt):
            continue
        if isinstance(node, ast.InsertStmt) and not _copies_rows(node):
            continue  # INSERT ... VALUES writes the rows it lists
        if ctx.is_new_table(node.relation) or table_name(node.relation) in seen:
            continue
        seen.add(table_name(node.relation))
        verb = {ast.UpdateStmt: "updates", ast.DeleteStmt: "deletes from"}.get(type(node), "inserts into")
        yield (
            f"a DO block {verb} {table_name(node.relation)}: the whole block, every pass of a loop included, "
            f"is one statement of the {ctx.phase} phase's transaction, so every row it writes stays locked "
            "until the phase commits"
        )


_BACKFILL = "move it to backfill: in migration.yaml (short batches, SKIP LOCKED, resumable)"

WHOLE_TABLE = Rule(
    code="EX601",
    name="whole-table-dml",
    alternative=_BACKFILL,
    check=_whole_table,
    explanation=(
        "An UPDATE or DELETE without WHERE locks every row of the table until the phase's transaction "
        "commits; the application's writes to any of them wait, and the WAL burst lags the replicas. A "
        "backfill step does it in short batches, each its own transaction, pausing when lag grows."
    ),
    cost="rewrite",
)
MANY_ROWS = Rule(
    code="EX602",
    name="many-rows-dml",
    alternative=f"{_BACKFILL}; or, for a few known rows, pin them by key (WHERE id = ... or id IN (...))",
    check=_many_rows,
    explanation=(
        "Lint cannot count rows offline, so an UPDATE or DELETE in a phase file counts as small only when "
        "its WHERE pins it to constants of a key column (id = 42, id IN (1, 2)). Anything else, such as "
        "name IS NULL or created_at < '2020-01-01', may match most of the table, and holds every row it "
        "matches until the phase commits. A table created earlier in the same file is exempt."
    ),
    cost="scan",
)
DML_IN_DO = Rule(
    code="EX603",
    name="dml-in-do-block",
    alternative=f"{_BACKFILL}; keep DO blocks for DDL",
    check=_dml_in_do,
    explanation=(
        "A DO block that loops over batches looks gentle but is one statement: it runs inside the "
        "phase's transaction and commits nothing until the end, so its every batch stays locked together "
        "(and COMMIT inside it is refused, EX702). Data changes belong in a backfill step."
    ),
)

RULES = (WHOLE_TABLE, MANY_ROWS, DML_IN_DO)
