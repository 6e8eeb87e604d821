"""Rules about constraints on existing tables: a FOREIGN KEY or CHECK added without ``NOT VALID`` checks
every row while holding its lock; a PRIMARY KEY or UNIQUE constraint builds its index under the lock; a
``VALIDATE`` in the same transaction as its ``NOT VALID`` scans under the lock the ``ADD`` took.
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


def _validate_in_group(statement: Statement, ctx: FileContext) -> Iterator[str]:
    node = statement.node
    if not isinstance(node, ast.AlterTableStmt) or ctx.is_new_table(node.relation):
        return
    added_here: set[str] = set()  # ADD ... NOT VALID, VALIDATE in one ALTER TABLE: one transaction too
    for cmd in alter_table_cmds(node):
        constraint = cmd.def_ if isinstance(cmd.def_, ast.Constraint) else None
        if cmd.subtype == AlterTableType.AT_AddConstraint and constraint and constraint.skip_validation:
            added_here.add(str(constraint.conname))
        name = str(cmd.name)
        if cmd.subtype == AlterTableType.AT_ValidateConstraint and (
            name in ctx.group_not_valid or name in added_here
        ):
            yield (
                f"validates {cmd.name} in the same transaction that added it NOT VALID: the lock the ADD took "
                "is held until the group commits, so the scan runs under it and NOT VALID gains nothing"
            )


FOREIGN_KEY = Rule(
    code="EX401",
    name="foreign-key-validating",
    alternative="ADD CONSTRAINT ... FOREIGN KEY ... NOT VALID, then VALIDATE CONSTRAINT in a later phase "
    "(contract.sql)",
    check=_foreign_key,
    explanation=(
        "Adding a foreign key checks every row while it holds a SHARE ROW EXCLUSIVE lock on both tables: "
        "no writes to either until the scan ends. NOT VALID enforces it for new rows at once, without the "
        "scan; VALIDATE CONSTRAINT checks the old rows later under a lock that lets writes go on."
    ),
    squawk=("adding-foreign-key-constraint", "constraint-missing-not-valid"),
    cost="scan",
)
CHECK = Rule(
    code="EX402",
    name="check-validating",
    alternative="ADD CONSTRAINT ... CHECK (...) NOT VALID, then VALIDATE CONSTRAINT in a later phase "
    "(contract.sql)",
    check=_check,
    explanation=(
        "Adding a CHECK scans every row under an ACCESS EXCLUSIVE lock. NOT VALID enforces it for new "
        "rows without the scan; VALIDATE CONSTRAINT checks the old rows under SHARE UPDATE EXCLUSIVE."
    ),
    squawk=("constraint-missing-not-valid",),
    cost="scan",
)
INDEX_BACKED = Rule(
    code="EX403",
    name="constraint-builds-index",
    alternative="CREATE UNIQUE INDEX CONCURRENTLY first (indexes: in migration.yaml), then ADD CONSTRAINT ... "
    "USING INDEX",
    check=_index_backed,
    explanation=(
        "ADD PRIMARY KEY, ADD UNIQUE and ADD EXCLUDE build their index while holding an ACCESS EXCLUSIVE "
        "lock: no reads, no writes for the whole build. Build the unique index CONCURRENTLY first, then "
        "attach it with USING INDEX, which only updates the catalog."
    ),
    squawk=("disallowed-unique-constraint", "adding-serial-primary-key-field"),
    cost="scan",
)
VALIDATE_IN_GROUP = Rule(
    code="EX404",
    name="validate-in-same-transaction",
    alternative="VALIDATE CONSTRAINT in a later phase (contract.sql, after the backfill), so the ADD ... NOT "
    "VALID commits first and the scan runs under SHARE UPDATE EXCLUSIVE",
    check=_validate_in_group,
    explanation=(
        "The runner applies the statements between two CONCURRENTLY statements in one transaction. ADD "
        "CONSTRAINT ... NOT VALID takes an ACCESS EXCLUSIVE (a CHECK) or SHARE ROW EXCLUSIVE (a foreign "
        "key) lock that is held until that transaction commits, so a VALIDATE CONSTRAINT in the same "
        "group scans the table under it: the same outage as adding the constraint valid."
    ),
    squawk=("constraint-missing-not-valid",),
    cost="scan",
)

RULES = (FOREIGN_KEY, CHECK, INDEX_BACKED, VALIDATE_IN_GROUP)
