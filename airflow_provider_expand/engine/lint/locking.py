"""Rules about statements that hold a table's heaviest lock for as long as they run: ``VACUUM FULL``,
``CLUSTER``, explicit ``LOCK TABLE``, and the ALTER TABLE forms that rewrite the whole table.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast
from pglast.enums import AlterTableType

from airflow_provider_expand.engine.lint.context import FileContext, alter_table_cmds, table_name
from airflow_provider_expand.engine.lint.findings import Rule
from airflow_provider_expand.engine.statements import Statement

_LOCK_MODES = {
    1: "ACCESS SHARE",
    2: "ROW SHARE",
    3: "ROW EXCLUSIVE",
    4: "SHARE UPDATE EXCLUSIVE",
    5: "SHARE",
    6: "SHARE ROW EXCLUSIVE",
    7: "EXCLUSIVE",
    8: "ACCESS EXCLUSIVE",
}
_REWRITES = {
    AlterTableType.AT_SetTableSpace: "SET TABLESPACE",
    AlterTableType.AT_SetLogged: "SET LOGGED",
    AlterTableType.AT_SetUnLogged: "SET UNLOGGED",
    AlterTableType.AT_SetAccessMethod: "SET ACCESS METHOD",
}


def _vacuum_full(statement: Statement, ctx: FileContext) -> Iterator[str]:
    node = statement.node
    full = any(
        isinstance(o, ast.DefElem) and o.defname == "full" for o in getattr(node, "options", None) or ()
    )
    if isinstance(node, ast.VacuumStmt) and node.is_vacuumcmd and full:
        yield "VACUUM FULL rewrites the table under an ACCESS EXCLUSIVE lock: no reads, no writes until done"


def _cluster(statement: Statement, ctx: FileContext) -> Iterator[str]:
    if isinstance(statement.node, ast.ClusterStmt):
        yield "CLUSTER rewrites the table under an ACCESS EXCLUSIVE lock: no reads, no writes until done"


def _lock_table(statement: Statement, ctx: FileContext) -> Iterator[str]:
    node = statement.node
    if isinstance(node, ast.LockStmt):
        names = ", ".join(str(r.relname) for r in node.relations or () if isinstance(r, ast.RangeVar))
        mode = _LOCK_MODES.get(int(node.mode or 0), "a")
        yield f"LOCK TABLE {names} IN {mode} MODE holds it until the transaction ends, queueing the app behind it"


def _rewrite(statement: Statement, ctx: FileContext) -> Iterator[str]:
    node = statement.node
    if isinstance(node, ast.AlterTableStmt) and not ctx.is_new_table(node.relation):
        for cmd in alter_table_cmds(node):
            form = _REWRITES.get(cmd.subtype) if cmd.subtype is not None else None
            if form:
                yield f"ALTER TABLE {table_name(node.relation)} {form} rewrites the table under an ACCESS EXCLUSIVE lock"


VACUUM_FULL = Rule(
    "EX501",
    "vacuum-full",
    "plain VACUUM (or pg_repack, which rebuilds online) outside the migration",
    _vacuum_full,
    cost="rewrite",
)
CLUSTER = Rule(
    "EX502",
    "cluster",
    "pg_repack --order-by, which reorders online, outside the migration",
    _cluster,
    cost="rewrite",
)
LOCK_TABLE = Rule(
    "EX503",
    "lock-table",
    "drop the explicit lock: each statement takes the lock it needs, under lock_timeout with retries",
    _lock_table,
)
REWRITE = Rule(
    "EX504",
    "table-rewrite",
    "do it in a maintenance window, or build a new table and move to it the expand/contract way",
    _rewrite,
    cost="rewrite",
)

RULES = (VACUUM_FULL, CLUSTER, LOCK_TABLE, REWRITE)
