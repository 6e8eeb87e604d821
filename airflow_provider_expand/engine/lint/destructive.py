"""Rules about removing things: what expand must never drop or rename (the old code still runs against
it), what no phase should truncate, and what rollback may drop (only what expand added).
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast
from pglast.enums import AlterTableType

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
            yield f"drops {words} in expand, while the old code may still use it"
    if isinstance(node, ast.AlterTableStmt):
        for cmd in alter_table_cmds(node):
            if cmd.subtype == AlterTableType.AT_ColumnDefault and cmd.def_ is None:
                yield f"drops the default of {table_name(node.relation)}.{cmd.name} in expand; old code relies on it"


def _rename(statement: Statement, ctx: FileContext) -> Iterator[str]:
    node = statement.node
    if isinstance(node, ast.RenameStmt):
        kind = object_words(node.renameType)
        old = node.subname or (table_name(node.relation) if node.relation else last_name(node.object))
        if node.relation is not None and ctx.is_new_table(node.relation):
            return
        yield f"renames {kind} {old} to {node.newname} in {ctx.phase}: code using the old name breaks at once"
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


def _rollback_drops_foreign(statement: Statement, ctx: FileContext) -> Iterator[str]:
    if ctx.expand_created is None:
        return
    for key, words in _removed(statement.node):
        if key not in ctx.expand_created and key not in ctx.created:
            yield f"drops {words}, which expand did not create: rolling back would destroy what the old code needs"


DROP_IN_EXPAND = Rule(
    "EX101",
    "drop-in-expand",
    "keep it until the contract phase (contract.sql), after the new code stopped using it",
    _drop_in_expand,
    frozenset({"expand"}),
)
RENAME = Rule(
    "EX102",
    "rename",
    "add the new name beside the old one (a new column kept in sync by a trigger, or a view), backfill, "
    "switch the code, drop the old one in contract",
    _rename,
    frozenset({"expand", "contract"}),
)
TRUNCATE = Rule(
    "EX103",
    "truncate",
    "delete in batches in a backfill step, or drop the table in contract once nothing uses it",
    _truncate,
    frozenset({"expand", "contract"}),
)
ROLLBACK_DROPS_FOREIGN = Rule(
    "EX104",
    "rollback-drops-foreign",
    "rollback.sql undoes expand: drop only what expand.sql (or indexes:) created",
    _rollback_drops_foreign,
    frozenset({"rollback"}),
)

RULES = (DROP_IN_EXPAND, RENAME, TRUNCATE, ROLLBACK_DROPS_FOREIGN)
