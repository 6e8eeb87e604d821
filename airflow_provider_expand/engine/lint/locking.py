"""Rules about statements that hold a table's heaviest lock for as long as they run: ``VACUUM FULL``,
``CLUSTER``, explicit ``LOCK TABLE``, the ALTER TABLE forms that rewrite the whole table, and ``DETACH
PARTITION`` without ``CONCURRENTLY``.
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
    if not isinstance(node, ast.VacuumStmt):  # other statements' options are not a list (DECLARE's are flags)
        return
    full = any(isinstance(o, ast.DefElem) and o.defname == "full" for o in node.options or ())
    if node.is_vacuumcmd and full:
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


def _detach_partition(statement: Statement, ctx: FileContext) -> Iterator[str]:
    node = statement.node
    if isinstance(node, ast.AlterTableStmt) and not ctx.is_new_table(node.relation):
        for cmd in alter_table_cmds(node):
            detach = cmd.def_ if isinstance(cmd.def_, ast.PartitionCmd) else None
            if (
                cmd.subtype == AlterTableType.AT_DetachPartition
                and detach is not None
                and not detach.concurrent
            ):
                yield (
                    f"detaches {table_name(detach.name)} from {table_name(node.relation)} without CONCURRENTLY: "
                    "ACCESS EXCLUSIVE on the parent, no reads or writes to any partition until it ends"
                )


VACUUM_FULL = Rule(
    code="EX501",
    name="vacuum-full",
    alternative="plain VACUUM (or pg_repack, which rebuilds online; REPACK (CONCURRENTLY) from PostgreSQL "
    "19) outside the migration",
    check=_vacuum_full,
    explanation="VACUUM FULL writes a new copy of the table under an ACCESS EXCLUSIVE lock.",
    squawk=("prefer-repack",),
    cost="rewrite",
)
CLUSTER = Rule(
    code="EX502",
    name="cluster",
    alternative="pg_repack --order-by, which reorders online (REPACK (CONCURRENTLY) ... USING INDEX from "
    "PostgreSQL 19), outside the migration",
    check=_cluster,
    explanation="CLUSTER rewrites the table in index order under an ACCESS EXCLUSIVE lock.",
    squawk=("prefer-repack",),
    cost="rewrite",
)
LOCK_TABLE = Rule(
    code="EX503",
    name="lock-table",
    alternative="drop the explicit lock: each statement takes the lock it needs, under lock_timeout with "
    "retries",
    check=_lock_table,
    explanation=(
        "An explicit LOCK TABLE is held until the runner's transaction group commits, longer than any "
        "statement in it needs, and every query on the table queues behind it."
    ),
)
REWRITE = Rule(
    code="EX504",
    name="table-rewrite",
    alternative="do it in a maintenance window, or build a new table and move to it the expand/contract way",
    check=_rewrite,
    explanation=(
        "SET TABLESPACE, SET LOGGED/UNLOGGED and SET ACCESS METHOD copy the whole table under an ACCESS "
        "EXCLUSIVE lock."
    ),
    cost="rewrite",
)
DETACH_PARTITION = Rule(
    code="EX505",
    name="detach-partition-blocking",
    alternative="ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY (the runner runs it on its own, outside "
    "a transaction)",
    check=_detach_partition,
    explanation=(
        "A plain DETACH PARTITION takes an ACCESS EXCLUSIVE lock on the partitioned table. CONCURRENTLY "
        "(PostgreSQL 14+) takes SHARE UPDATE EXCLUSIVE and waits for running queries instead; it cannot "
        "run in a transaction block, which the runner knows."
    ),
    squawk=("require-concurrent-partition-detach",),
)

RULES = (VACUUM_FULL, CLUSTER, LOCK_TABLE, REWRITE, DETACH_PARTITION)
