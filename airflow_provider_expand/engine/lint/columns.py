"""Rules about columns: adding one that the old code cannot write, one whose default rewrites the table,
changing a type, and ``SET NOT NULL`` that scans the table under an ACCESS EXCLUSIVE lock.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast
from pglast.enums import AlterTableType, ConstrType
from pglast.visitors import Visitor

from airflow_provider_expand.engine.lint.context import FileContext, alter_table_cmds, last_name, table_name
from airflow_provider_expand.engine.lint.findings import Rule
from airflow_provider_expand.engine.statements import Statement

# Built-in functions whose value differs row by row: as a column DEFAULT they make ADD COLUMN rewrite the
# table (a stable or immutable default, e.g. now() or a constant, is stored once in the catalog, PG 11+).
VOLATILE_FUNCTIONS = frozenset(
    {
        "random",
        "random_normal",
        "gen_random_uuid",
        "uuidv4",
        "uuidv7",
        "uuid_generate_v1",
        "uuid_generate_v1mc",
        "uuid_generate_v4",
        "gen_random_bytes",
        "clock_timestamp",
        "timeofday",
        "nextval",
        "txid_current",
        "pg_current_xact_id",
    }
)
SERIAL_TYPES = frozenset({"serial", "serial4", "bigserial", "serial8", "smallserial", "serial2"})


class _Functions(Visitor):
    def __init__(self) -> None:
        self.names: list[str] = []

    def visit_FuncCall(self, ancestors: object, node: ast.FuncCall) -> None:
        name = last_name(node.funcname)
        if name:
            self.names.append(name.lower())


def volatile_calls(expr: ast.Node) -> list[str]:
    collector = _Functions()
    collector(expr)
    return [n for n in collector.names if n in VOLATILE_FUNCTIONS]


def _added_columns(node: ast.Node, ctx: FileContext) -> Iterator[tuple[str, ast.ColumnDef]]:
    if isinstance(node, ast.AlterTableStmt) and not ctx.is_new_table(node.relation):
        for cmd in alter_table_cmds(node):
            if cmd.subtype == AlterTableType.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
                yield str(table_name(node.relation)), cmd.def_


def _constraints(column: ast.ColumnDef) -> list[ast.Constraint]:
    return [c for c in column.constraints or () if isinstance(c, ast.Constraint)]


def _not_null_without_default(statement: Statement, ctx: FileContext) -> Iterator[str]:
    for table, column in _added_columns(statement.node, ctx):
        kinds = {c.contype for c in _constraints(column)}
        not_null = column.is_not_null or ConstrType.CONSTR_NOTNULL in kinds
        fills = {ConstrType.CONSTR_DEFAULT, ConstrType.CONSTR_IDENTITY, ConstrType.CONSTR_GENERATED} & kinds
        type_name = (last_name(column.typeName) or "") if column.typeName else ""
        if not_null and not fills and type_name not in SERIAL_TYPES:
            yield (
                f"adds {table}.{column.colname} NOT NULL without a default: it fails on existing rows, "
                "and the old code's inserts fail after it"
            )


def _rewriting_default(statement: Statement, ctx: FileContext) -> Iterator[str]:
    for table, column in _added_columns(statement.node, ctx):
        where = f"{table}.{column.colname}"
        type_name = (last_name(column.typeName) or "") if column.typeName else ""
        if type_name in SERIAL_TYPES:
            yield f"adds {where} as {type_name}: every row gets a nextval(), a rewrite of the whole table"
        for constraint in _constraints(column):
            kind = constraint.contype
            if kind == ConstrType.CONSTR_DEFAULT and constraint.raw_expr is not None:
                volatile = volatile_calls(constraint.raw_expr)
                if volatile:
                    yield (
                        f"adds {where} with the volatile default {volatile[0]}(): the table is rewritten "
                        "under an ACCESS EXCLUSIVE lock"
                    )
            elif kind == ConstrType.CONSTR_IDENTITY:
                yield f"adds {where} as an identity column: the table is rewritten under an ACCESS EXCLUSIVE lock"
            elif kind == ConstrType.CONSTR_GENERATED and constraint.generated_kind == "s":
                yield f"adds {where} as a STORED generated column: the table is rewritten under an ACCESS EXCLUSIVE lock"


def _type_change(statement: Statement, ctx: FileContext) -> Iterator[str]:
    node = statement.node
    if isinstance(node, ast.AlterTableStmt) and not ctx.is_new_table(node.relation):
        for cmd in alter_table_cmds(node):
            if cmd.subtype == AlterTableType.AT_AlterColumnType:
                new_type = last_name(cmd.def_.typeName) if isinstance(cmd.def_, ast.ColumnDef) else None
                yield (
                    f"changes the type of {table_name(node.relation)}.{cmd.name} to {new_type}: most type changes "
                    "rewrite the table and its indexes under an ACCESS EXCLUSIVE lock, and break the old code"
                )


def _set_not_null(statement: Statement, ctx: FileContext) -> Iterator[str]:
    node = statement.node
    if isinstance(node, ast.AlterTableStmt) and not ctx.is_new_table(node.relation):
        table = str(table_name(node.relation))
        for cmd in alter_table_cmds(node):
            subtype = cmd.subtype
            if subtype == AlterTableType.AT_SetNotNull and not ctx.has_validated_not_null(
                table, str(cmd.name)
            ):
                yield (
                    f"sets {table}.{cmd.name} NOT NULL without a validated CHECK ({cmd.name} IS NOT NULL): "
                    "it scans the whole table under an ACCESS EXCLUSIVE lock"
                )


ADD_NOT_NULL = Rule(
    "EX301",
    "add-column-not-null",
    "add it nullable (or with a constant DEFAULT), backfill it, then SET NOT NULL through a validated CHECK",
    _not_null_without_default,
)
REWRITING_DEFAULT = Rule(
    "EX302",
    "add-column-rewrite",
    "add it without the default, SET DEFAULT for new rows, and fill the existing rows in a backfill step",
    _rewriting_default,
    cost="rewrite",
)
TYPE_CHANGE = Rule(
    "EX303",
    "column-type-change",
    "add a new column of the new type, keep it in sync with a trigger, backfill, switch the code, "
    "drop the old column in contract",
    _type_change,
    cost="rewrite",
)
SET_NOT_NULL = Rule(
    "EX304",
    "set-not-null",
    "first ADD CONSTRAINT c CHECK (col IS NOT NULL) NOT VALID (in expand), then VALIDATE CONSTRAINT c, "
    "then SET NOT NULL",
    _set_not_null,
    cost="scan",
)

RULES = (ADD_NOT_NULL, REWRITING_DEFAULT, TYPE_CHANGE, SET_NOT_NULL)
