"""Rules about changing data inside a DDL phase: an UPDATE or DELETE of a whole table holds every row it
touches until the phase commits (the runbook's DO-block problem); big data changes belong in a backfill.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast

from airflow_provider_expand.engine.lint.context import FileContext, table_name
from airflow_provider_expand.engine.lint.findings import Rule
from airflow_provider_expand.engine.statements import Statement


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


WHOLE_TABLE = Rule(
    "EX601",
    "whole-table-dml",
    "move it to backfill: in migration.yaml (short batches, SKIP LOCKED, resumable)",
    _whole_table,
    cost="rewrite",
)

RULES = (WHOLE_TABLE,)
