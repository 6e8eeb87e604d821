"""Rules about removing things: what expand must never drop or rename (the old code still runs against
it; dropping is the point of contract), what no phase should truncate or drop outright (a database, every
table a TRUNCATE CASCADE reaches), and what rollback may drop (only what expand added).
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast
from pglast.enums import AlterTableType, DropBehavior

from airflow_provider_expand.engine.lint.context import (
    FileContext,
    ObjectKey,
    alter_table_cmds,
    drop_targets,
    last_name,
    object_words,
    table_name,
)
from airflow_provider_expand.engine.lint.findings import Rule
from airflow_provider_expand.engine.statements import Statement


def _removed(node: ast.Node) -> Iterator[tuple[ObjectKey, str]]:
    """What a statement removes, with words for the message (``column products.title``)."""
    if isinstance(node, ast.DropStmt):
        kind = object_words(node.removeType)
        for key in drop_targets(node):
            yield key, f"{kind} {key[1]}"
    elif isinstance(node, ast.AlterTableStmt):
        table = str(table_name(node.relation))
        for cmd in alter_table_cmds(node):
            subtype = cmd.subtype
            if subtype == AlterTableType.AT_DropColumn:
                yield ("column", f"{table}.{cmd.name}"), f"column {table}.{cmd.name}"
            elif subtype == AlterTableType.AT_DropConstraint:
                yield ("constraint", str(cmd.name)), f"constraint {cmd.name} of {table}"


def _drop_in_expand(statement: Statement, ctx: FileContext) -> Iterator[str]:
    node = statement.node
    for key, words in _removed(node):
        if key not in ctx.created:
            yield f"drops {words} in expand, while the old code may still use it; dropping belongs in contract"
    if isinstance(node, ast.AlterTableStmt):
        for cmd in alter_table_cmds(node):
            if cmd.subtype == AlterTableType.AT_ColumnDefault and cmd.def_ is None:
                yield (
                    f"drops the default of {table_name(node.relation)}.{cmd.name} in expand; old code relies on "
                    "it (drop it in contract)"
                )


def _rename(statement: Statement, ctx: FileContext) -> Iterator[str]:
    node = statement.node
    if isinstance(node, ast.RenameStmt):
        kind = object_words(node.renameType)
        old = node.subname or (table_name(node.relation) if node.relation else last_name(node.object))
        if node.relation is not None and ctx.is_new_table(node.relation):
            return
        yield f"renames {kind} {old} to {node.newname} in {ctx.phase}: code using the old name breaks at once"
    elif isinstance(node, ast.AlterEnumStmt) and node.oldVal:
        yield (
            f"renames value {node.oldVal!r} of enum {last_name(node.typeName)} to {node.newVal!r} in {ctx.phase}: "
            "code writing or comparing the old label breaks at once"
        )
    elif (
        isinstance(node, ast.AlterObjectSchemaStmt) and node.relation and not ctx.is_new_table(node.relation)
    ):
        yield f"moves {table_name(node.relation)} to schema {node.newschema} in {ctx.phase}: code using it breaks"


def _truncate(statement: Statement, ctx: FileContext) -> Iterator[str]:
    node = statement.node
    if isinstance(node, ast.TruncateStmt):
        for relation in node.relations or ():
            if not ctx.is_new_table(relation):
                yield f"truncates {relation.relname}: its rows are gone, and it takes an ACCESS EXCLUSIVE lock"


def _truncate_cascade(statement: Statement, ctx: FileContext) -> Iterator[str]:
    node = statement.node
    if isinstance(node, ast.TruncateStmt) and node.behavior == DropBehavior.DROP_CASCADE:
        names = ", ".join(str(r.relname) for r in node.relations or ())
        yield (
            f"TRUNCATE {names} CASCADE in {ctx.phase} also empties every table with a foreign key to it, and "
            "theirs in turn, whichever lint cannot see"
        )


def _drop_database(statement: Statement, ctx: FileContext) -> Iterator[str]:
    node = statement.node
    if isinstance(node, ast.DropdbStmt):
        yield f"drops database {node.dbname} in {ctx.phase}: no phase of a schema migration drops a database"


def _rollback_drops_foreign(statement: Statement, ctx: FileContext) -> Iterator[str]:
    if ctx.expand_created is None:
        return
    for key, words in _removed(statement.node):
        if key not in ctx.expand_created and key not in ctx.created:
            yield f"drops {words}, which expand did not create: rolling back would destroy what the old code needs"


DROP_IN_EXPAND = Rule(
    code="EX101",
    name="drop-in-expand",
    alternative="keep it until the contract phase (contract.sql), after the new code stopped using it",
    check=_drop_in_expand,
    phases=frozenset({"expand"}),
    explanation=(
        "During expand and the soak the old code still runs: a table, column, constraint, default, "
        "function, trigger or view it uses must still be there. Dropping is what contract is for, once "
        "only the new code runs; in contract the same statement is not a finding. Objects created "
        "earlier in the same expand.sql may be dropped again."
    ),
    squawk=("ban-drop-column", "ban-drop-table"),
)
RENAME = Rule(
    code="EX102",
    name="rename",
    alternative="add the new name beside the old one (a new column kept in sync by a trigger, or a view), "
    "backfill, switch the code, drop the old one in contract",
    check=_rename,
    phases=frozenset({"expand", "contract"}),
    explanation=(
        "A rename is a drop and a create in one: whichever code uses the old name fails the moment it "
        "commits, in expand the old code, in contract the new code if it was not switched. No phase "
        "makes a rename safe on its own; the two-phase way keeps both names until contract. This also "
        "covers ALTER ... SET SCHEMA and renaming an enum's value."
    ),
    squawk=("renaming-column", "renaming-table"),
)
TRUNCATE = Rule(
    code="EX103",
    name="truncate",
    alternative="delete in batches in a backfill step, or drop the table in contract once nothing uses it",
    check=_truncate,
    phases=frozenset({"expand", "contract"}),
    explanation=(
        "TRUNCATE empties a table the application still reads and takes an ACCESS EXCLUSIVE lock. A "
        "table created earlier in the same file is exempt."
    ),
)
ROLLBACK_DROPS_FOREIGN = Rule(
    code="EX104",
    name="rollback-drops-foreign",
    alternative="rollback.sql undoes expand: drop only what expand.sql (or indexes:) created",
    check=_rollback_drops_foreign,
    phases=frozenset({"rollback"}),
    explanation=(
        "rollback.sql runs after a failure, while the old code serves traffic: it must remove what "
        "expand.sql and the index steps added, and nothing the old code had before. Applies when expand "
        "is a SQL file (an app's migrator image is not second-guessed)."
    ),
)
DROP_DATABASE = Rule(
    code="EX105",
    name="drop-database",
    alternative="remove it: drop a database by hand, outside any migration, after a backup",
    check=_drop_database,
    explanation=(
        "DROP DATABASE is irreversible and outside what a schema migration does; no phase makes it "
        "right (and PostgreSQL refuses it inside the runner's transaction anyway)."
    ),
    squawk=("ban-drop-database",),
)
TRUNCATE_CASCADE = Rule(
    code="EX106",
    name="truncate-cascade",
    alternative="name every table to empty (TRUNCATE a, b) without CASCADE, or delete in a backfill step",
    check=_truncate_cascade,
    explanation=(
        "CASCADE follows foreign keys recursively: TRUNCATE a CASCADE also empties b referencing a and c "
        "referencing b, tables the file never names. Flagged in every phase, also for a table created "
        "in the same file, since the cascade reaches tables that are not new."
    ),
    squawk=("ban-truncate-cascade",),
)

RULES = (DROP_IN_EXPAND, RENAME, TRUNCATE, ROLLBACK_DROPS_FOREIGN, DROP_DATABASE, TRUNCATE_CASCADE)
