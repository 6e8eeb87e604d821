"""Rules about rollback.sql as the undo of expand. It runs after a failure anywhere between expand and the
soak, while the old code serves traffic, and possibly after an expand that applied only in part: each of
its statements must tolerate what is not there (IF EXISTS), and together they must take away what expand
added and give back what expand took. The second needs both files; :func:`rollback_gaps` compares them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from pglast import ast
from pglast.enums import AlterTableType

from airflow_provider_expand.engine.lint.context import (
    FileContext,
    ObjectKey,
    alter_table_cmds,
    drop_targets,
    object_words,
    table_name,
)
from airflow_provider_expand.engine.lint.findings import Rule
from airflow_provider_expand.engine.statements import Statement

# Created by expand but not for rollback to remove: an extension may have been there before (and other
# schemas use it); a default is undone with its column.
_NOT_UNDONE = frozenset({"extension", "default"})
_KIND_WORDS = {"relation": "table/view"}
_UNDO_WORDS = {
    "relation": "DROP TABLE/VIEW IF EXISTS",
    "column": "ALTER TABLE ... DROP COLUMN IF EXISTS",
    "index": "DROP INDEX CONCURRENTLY IF EXISTS",
    "constraint": "ALTER TABLE ... DROP CONSTRAINT IF EXISTS",
    "function": "DROP FUNCTION IF EXISTS",
    "trigger": "DROP TRIGGER IF EXISTS ... ON ...",
    "policy": "DROP POLICY IF EXISTS ... ON ...",
    "type": "DROP TYPE IF EXISTS",
    "schema": "DROP SCHEMA IF EXISTS",
}


def _fragile(node: ast.Node, ctx: FileContext) -> Iterator[str]:
    """What in a rollback statement fails when expand did not get that far."""
    if isinstance(node, ast.DropStmt) and not node.missing_ok:
        kind = object_words(node.removeType)
        for key in drop_targets(node):
            if key not in ctx.created:
                yield f"DROP {kind.upper()} {key[1]} without IF EXISTS"
    elif isinstance(node, ast.AlterTableStmt):
        table = table_name(node.relation)
        dropped_first = set()
        for cmd in alter_table_cmds(node):
            subtype = cmd.subtype
            if subtype == AlterTableType.AT_DropConstraint and cmd.missing_ok:
                dropped_first.add(str(cmd.name))
            elif (
                subtype in (AlterTableType.AT_DropColumn, AlterTableType.AT_DropConstraint)
                and not cmd.missing_ok
            ):
                what = "COLUMN" if subtype == AlterTableType.AT_DropColumn else "CONSTRAINT"
                yield f"ALTER TABLE {table} DROP {what} {cmd.name} without IF EXISTS"
            elif (
                subtype == AlterTableType.AT_AddColumn
                and not cmd.missing_ok
                and isinstance(cmd.def_, ast.ColumnDef)
            ):
                yield f"ALTER TABLE {table} ADD COLUMN {cmd.def_.colname} without IF NOT EXISTS"
            elif subtype == AlterTableType.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
                name = cmd.def_.conname
                if name and str(name) not in dropped_first:
                    yield f"ALTER TABLE {table} ADD CONSTRAINT {name} without a DROP CONSTRAINT IF EXISTS before it"
    elif isinstance(node, ast.CreateStmt | ast.IndexStmt | ast.CreateSeqStmt) and not node.if_not_exists:
        yield f"{_create_words(node)} without IF NOT EXISTS"
    elif isinstance(node, ast.CreateFunctionStmt | ast.ViewStmt | ast.CreateTrigStmt) and not node.replace:
        yield f"{_create_words(node)} without OR REPLACE"


def _create_words(node: ast.Node) -> str:
    if isinstance(node, ast.CreateStmt):
        return f"CREATE TABLE {table_name(node.relation)}"
    if isinstance(node, ast.IndexStmt):
        return f"CREATE INDEX {node.idxname or ''}".rstrip()
    if isinstance(node, ast.CreateSeqStmt):
        return f"CREATE SEQUENCE {table_name(node.sequence)}"
    if isinstance(node, ast.ViewStmt):
        return f"CREATE VIEW {table_name(node.view)}"
    if isinstance(node, ast.CreateTrigStmt):
        return f"CREATE TRIGGER {node.trigname}"
    return "CREATE FUNCTION"


def _not_robust(statement: Statement, ctx: FileContext) -> Iterator[str]:
    for problem in _fragile(statement.node, ctx):
        yield (
            f"{problem} in rollback: rollback also runs after an expand that applied in part (or not at all), "
            "and then this statement fails on what is not there, leaving the migration half undone"
        )


ROLLBACK_NOT_ROBUST = Rule(
    code="EX905",
    name="rollback-not-robust",
    alternative="DROP ... IF EXISTS, ADD COLUMN IF NOT EXISTS, CREATE ... IF NOT EXISTS or CREATE OR "
    "REPLACE; for a constraint: ALTER TABLE t DROP CONSTRAINT IF EXISTS c, ADD CONSTRAINT c ...",
    check=_not_robust,
    phases=frozenset({"rollback"}),
    explanation=(
        "Expand commits in groups (each run of statements between CONCURRENTLY ones), and a failure may "
        "come in any of them, or in a later step: rollback.sql must work against every one of those "
        "states. A statement that needs the object to exist, or not to exist yet, fails in some of them, "
        "and a rollback that fails leaves both the schema and the migration in between."
    ),
    squawk=("prefer-robust-stmts",),
)
ROLLBACK_LEAVES_BEHIND = Rule(
    code="EX903",
    name="rollback-leaves-behind",
    alternative="drop it in rollback.sql (DROP ... IF EXISTS), or drop its table or column there",
    phases=frozenset({"rollback"}),
    explanation=(
        "Everything expand.sql created, and every index an index step built, is new schema the old code "
        "never asked for: after a rollback it must be gone, or the next try of the migration meets it "
        "(a trigger that keeps firing, a NOT NULL column the old code cannot fill, an index that slows "
        "writes). Reported at the expand statement (or the indexes: entry) that created it; dropping "
        "its table, or the column an index is on, counts. Extensions are left alone."
    ),
)
ROLLBACK_NOT_RECREATED = Rule(
    code="EX904",
    name="rollback-not-recreated",
    alternative="re-create it in rollback.sql (CREATE ... IF NOT EXISTS, ADD COLUMN IF NOT EXISTS, SET "
    "DEFAULT, RENAME back), or keep it until contract",
    phases=frozenset({"rollback"}),
    explanation=(
        "What expand dropped or renamed away (EX101 and EX102 flag it; a suppression says why it was "
        "safe) is something the old code had: a rollback that does not bring it back leaves the old code "
        "without it. Reported at the expand statement that dropped it."
    ),
)

RULES = (ROLLBACK_NOT_ROBUST,)
"""Checked statement by statement; EX903 and EX904 compare whole files (:func:`rollback_gaps`)."""


@dataclass(frozen=True)
class Gap:
    """Something expand (or an index step) did that rollback.sql does not undo."""

    rule: Rule
    key: ObjectKey
    line: int  # in expand.sql; 0 for an index step
    message: str


@dataclass(frozen=True)
class IndexStep:
    """An index from ``indexes:`` in migration.yaml, as rollback must know it."""

    name: str
    table: str
    columns: Sequence[str]


def _owner(key: ObjectKey, expand: FileContext) -> str | None:
    if key[0] == "column":
        return key[1].partition(".")[0]
    return expand.owners.get(key)


def _undone(key: ObjectKey, owner: str | None, uses: set[ObjectKey], rollback: FileContext) -> bool:
    if key in rollback.removed or key in rollback.appeared:
        return True
    if owner is not None and ("relation", owner) in rollback.removed:
        return True
    for dependency in uses:
        if dependency in rollback.removed and (dependency[0] == "column" or dependency in rollback.cascaded):
            return True
    return False


def rollback_gaps(
    expand: FileContext, rollback: FileContext, index_steps: Sequence[IndexStep] = ()
) -> Iterator[Gap]:
    """What expand created that rollback leaves behind, and what it dropped that rollback does not bring back."""
    for key, line in sorted(expand.origins.items(), key=lambda item: (item[1], item[0])):
        owner = _owner(key, expand)
        if key[0] in _NOT_UNDONE or (owner is not None and ("relation", owner) in expand.origins):
            continue  # the parts of a table expand created stand or fall with the table
        if _undone(key, owner, expand.uses.get(key, set()), rollback):
            continue
        kind = _KIND_WORDS.get(key[0], key[0])
        yield Gap(
            ROLLBACK_LEAVES_BEHIND,
            key,
            line,
            f"creates {kind} {key[1]}, which rollback.sql never drops: a rollback leaves it behind "
            f"({_UNDO_WORDS.get(key[0], 'DROP ... IF EXISTS')} in rollback.sql)",
        )
    for key, line in sorted(expand.removed.items(), key=lambda item: (item[1], item[0])):
        if key in rollback.appeared:
            continue
        what = "the default of" if key[0] == "default" else _KIND_WORDS.get(key[0], key[0])
        yield Gap(
            ROLLBACK_NOT_RECREATED,
            key,
            line,
            f"drops (or renames away) {what} {key[1]}, which rollback.sql never brings back: after a rollback "
            "the old code runs without it",
        )
    for step in index_steps:
        key = ("index", step.name)
        uses = {("column", f"{step.table}.{c}") for c in step.columns}
        if not _undone(key, step.table, uses, rollback):
            yield Gap(
                ROLLBACK_LEAVES_BEHIND,
                key,
                0,
                f"indexes: builds {step.name} on {step.table}, which rollback.sql never drops: a rollback "
                "leaves it behind (DROP INDEX CONCURRENTLY IF EXISTS in rollback.sql)",
            )
