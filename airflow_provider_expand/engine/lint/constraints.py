"""Rules about constraints on existing tables: a FOREIGN KEY or CHECK added without ``NOT VALID`` checks
every row while holding its lock; a PRIMARY KEY or UNIQUE constraint builds its index under the lock.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast
from pglast.enums import AlterTableType, ConstrType

from airflow_provider_expand.engine.lint.context import FileContext, alter_table_cmds, table_name
from airflow_provider_expand.engine.lint.findings import Rule
from airflow_provider_expand.engine.statements import Statement


def _added_constraints(node: ast.Node, ctx: FileContext) -> Iterator[tuple[str, ast.Constraint, bool]]:
    """``(table, constraint, inline)`` for every constraint an ALTER TABLE adds to an existing table;
    ``inline`` marks one declared with ADD COLUMN, which cannot be NOT VALID."""
    if not isinstance(node, ast.AlterTableStmt) or ctx.is_new_table(node.relation):
        return
    table = str(table_name(node.relation))
    for cmd in alter_table_cmds(node):
        subtype = cmd.subtype
        if subtype == AlterTableType.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
            yield table, cmd.def_, False
        elif subtype == AlterTableType.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
            for constraint in cmd.def_.constraints or ():
                if isinstance(constraint, ast.Constraint):
                    yield table, constraint, True


def _label(table: str, constraint: ast.Constraint) -> str:
    return f"{constraint.conname} on {table}" if constraint.conname else f"on {table}"


def _foreign_key(statement: Statement, ctx: FileContext) -> Iterator[str]:
    for table, constraint, inline in _added_constraints(statement.node, ctx):
        if constraint.contype == ConstrType.CONSTR_FOREIGN and (inline or not constraint.skip_validation):
            yield (
                f"adds a FOREIGN KEY {_label(table, constraint)} that checks every row while it holds a lock on "
                "both tables"
            )


def _check(statement: Statement, ctx: FileContext) -> Iterator[str]:
    for table, constraint, inline in _added_constraints(statement.node, ctx):
        if constraint.contype == ConstrType.CONSTR_CHECK and (inline or not constraint.skip_validation):
            yield f"adds a CHECK {_label(table, constraint)} that scans every row under an ACCESS EXCLUSIVE lock"


def _index_backed(statement: Statement, ctx: FileContext) -> Iterator[str]:
    for table, constraint, _ in _added_constraints(statement.node, ctx):
        kind = constraint.contype
        if kind in (ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_UNIQUE) and not constraint.indexname:
            word = "PRIMARY KEY" if kind == ConstrType.CONSTR_PRIMARY else "UNIQUE constraint"
            yield f"adds a {word} {_label(table, constraint)}: its index is built under an ACCESS EXCLUSIVE lock"
        elif kind == ConstrType.CONSTR_EXCLUSION:
            yield (
                f"adds an EXCLUDE constraint {_label(table, constraint)}: its index is built under an "
                "ACCESS EXCLUSIVE lock"
            )


FOREIGN_KEY = Rule(
    "EX401",
    "foreign-key-validating",
    "ADD CONSTRAINT ... FOREIGN KEY ... NOT VALID, then VALIDATE CONSTRAINT in a later statement",
    _foreign_key,
    cost="scan",
)
CHECK = Rule(
    "EX402",
    "check-validating",
    "ADD CONSTRAINT ... CHECK (...) NOT VALID, then VALIDATE CONSTRAINT in a later statement",
    _check,
    cost="scan",
)
INDEX_BACKED = Rule(
    "EX403",
    "constraint-builds-index",
    "CREATE UNIQUE INDEX CONCURRENTLY first (indexes: in migration.yaml), then ADD CONSTRAINT ... USING INDEX",
    _index_backed,
    cost="scan",
)

RULES = (FOREIGN_KEY, CHECK, INDEX_BACKED)
