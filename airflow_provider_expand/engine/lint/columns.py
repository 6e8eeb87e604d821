"""Rules about columns: adding one that the old code cannot write, one whose default rewrites the table,
changing a type, ``SET NOT NULL`` that scans the table under an ACCESS EXCLUSIVE lock, ``DROP NOT NULL``
while the old code still expects a value, and a column named twice in one statement.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

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


def _drop_not_null(statement: Statement, ctx: FileContext) -> Iterator[str]:
    node = statement.node
    if isinstance(node, ast.AlterTableStmt) and not ctx.is_new_table(node.relation):
        table = table_name(node.relation)
        for cmd in alter_table_cmds(node):
            if (
                cmd.subtype == AlterTableType.AT_DropNotNull
                and ("column", f"{table}.{cmd.name}") not in ctx.created
            ):
                yield (
                    f"drops NOT NULL of {table}.{cmd.name} in expand: the old code, still running, may read a "
                    "NULL it was promised it would never see; in contract, with only the new code, it is safe"
                )


def _repeated(names: Iterable[str | None]) -> list[str]:
    counts = Counter(n for n in names if n)
    return [name for name, count in counts.items() if count > 1]


def _whole_columns(targets: Iterable[ast.ResTarget] | None) -> Iterator[str | None]:
    """Target column names, leaving out element and field assignments (``a[1] = x, a[2] = y`` is legal)."""
    return (t.name for t in targets or () if not t.indirection)


def _named_twice(node: ast.Node) -> Iterator[tuple[str, str]]:
    """``(what, column)`` for every column a statement assigns or declares more than once."""
    if isinstance(node, ast.UpdateStmt):
        for name in _repeated(_whole_columns(node.targetList)):
            yield f"UPDATE {table_name(node.relation)} assigns", name
    elif isinstance(node, ast.InsertStmt):
        for name in _repeated(_whole_columns(node.cols)):
            yield f"INSERT INTO {table_name(node.relation)} lists", name
        conflict = node.onConflictClause.targetList if node.onConflictClause is not None else None
        for name in _repeated(_whole_columns(conflict)):
            yield "ON CONFLICT DO UPDATE assigns", name
    elif isinstance(node, ast.CreateStmt):
        columns = (e.colname for e in node.tableElts or () if isinstance(e, ast.ColumnDef))
        for name in _repeated(columns):
            yield f"CREATE TABLE {table_name(node.relation)} declares", name
    elif isinstance(node, ast.AlterTableStmt):
        added = (
            cmd.def_.colname
            for cmd in alter_table_cmds(node)
            if cmd.subtype == AlterTableType.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef)
        )
        for name in _repeated(added):
            yield f"ALTER TABLE {table_name(node.relation)} adds", name
    elif isinstance(node, ast.ViewStmt):
        for name in _repeated(last_name(a) for a in node.aliases or ()):
            yield f"CREATE VIEW {table_name(node.view)} names", name
    elif isinstance(node, ast.CreateTableAsStmt) and node.into is not None:
        for name in _repeated(last_name(c) for c in node.into.colNames or ()):
            yield f"CREATE TABLE {table_name(node.into.rel)} AS names", name


def _duplicate_column(statement: Statement, ctx: FileContext) -> Iterator[str]:
    for what, name in _named_twice(statement.node):
        yield f"{what} column {name} more than once: PostgreSQL refuses the statement, failing the {ctx.phase}"


ADD_NOT_NULL = Rule(
    code="EX301",
    name="add-column-not-null",
    alternative="add it nullable (or with a constant DEFAULT), backfill it, then SET NOT NULL through a "
    "validated CHECK",
    check=_not_null_without_default,
    explanation=(
        "ADD COLUMN ... NOT NULL without a default fails on a table that has rows, and once it exists the "
        "old code's INSERTs, which do not know the column, fail. A constant DEFAULT (stored in the "
        "catalog since PostgreSQL 11, no rewrite) or a nullable column avoids both."
    ),
    squawk=("adding-required-field",),
)
REWRITING_DEFAULT = Rule(
    code="EX302",
    name="add-column-rewrite",
    alternative="add it without the default, SET DEFAULT for new rows, and fill the existing rows in a "
    "backfill step",
    check=_rewriting_default,
    explanation=(
        "A column whose default differs row by row (a volatile function such as gen_random_uuid() or "
        "clock_timestamp(), a serial's nextval(), an identity) or a STORED generated column makes ADD "
        "COLUMN rewrite the whole table under an ACCESS EXCLUSIVE lock: no reads, no writes until done. "
        "A constant or stable default (now(), 0, 'x') is stored once and costs nothing."
    ),
    squawk=("adding-field-with-default",),
    cost="rewrite",
)
TYPE_CHANGE = Rule(
    code="EX303",
    name="column-type-change",
    alternative="add a new column of the new type, keep it in sync with a trigger, backfill, switch the "
    "code, drop the old column in contract",
    check=_type_change,
    explanation=(
        "ALTER COLUMN ... TYPE rewrites the table and rebuilds its indexes under an ACCESS EXCLUSIVE lock "
        "for most changes (int to bigint included), and code that reads the old type may break. Only a "
        "few binary-coercible changes (varchar(n) to text or a longer varchar) skip the rewrite."
    ),
    squawk=("changing-column-type",),
    cost="rewrite",
)
SET_NOT_NULL = Rule(
    code="EX304",
    name="set-not-null",
    alternative="first ADD CONSTRAINT c CHECK (col IS NOT NULL) NOT VALID (in expand), then VALIDATE "
    "CONSTRAINT c, then SET NOT NULL",
    check=_set_not_null,
    explanation=(
        "SET NOT NULL scans every row under an ACCESS EXCLUSIVE lock, unless a validated CHECK (col IS "
        "NOT NULL) already proves it (PostgreSQL 12+). VALIDATE CONSTRAINT scans under a SHARE UPDATE "
        "EXCLUSIVE lock, which lets reads and writes go on. In expand, EX901 also flags it: the old code "
        "may still write NULL."
    ),
    squawk=("adding-not-nullable-field",),
    cost="scan",
)
DROP_NOT_NULL = Rule(
    code="EX305",
    name="drop-not-null",
    alternative="keep NOT NULL through the soak (give the column a DEFAULT, or fill it with a trigger, so the "
    "new code's rows still satisfy it) and DROP NOT NULL in contract",
    check=_drop_not_null,
    phases=frozenset({"expand"}),
    explanation=(
        "Old code, and PL/pgSQL written for it, relies on the column never being NULL; during expand and "
        "the soak the new code can write rows with NULL there, which the old code then reads. In contract "
        "only the new code runs, which is the one that wants the column optional: not a finding there."
    ),
    squawk=("ban-drop-not-null",),
)
DUPLICATE_COLUMN = Rule(
    code="EX306",
    name="duplicate-column",
    alternative="name each column once (remove the repeated assignment or declaration)",
    check=_duplicate_column,
    explanation=(
        "UPDATE ... SET a = 1, a = 2, INSERT INTO t (a, a), CREATE TABLE t (a int, a text) and the like "
        "are refused by PostgreSQL at run time: the phase would fail midway through the migration instead "
        "of at lint."
    ),
    squawk=("ban-duplicate-column-assignments",),
)

RULES = (ADD_NOT_NULL, REWRITING_DEFAULT, TYPE_CHANGE, SET_NOT_NULL, DROP_NOT_NULL, DUPLICATE_COLUMN)
