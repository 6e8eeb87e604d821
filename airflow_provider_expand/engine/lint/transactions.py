"""Rules about transaction control in a phase file. The runner gives each group of statements its own
transaction (and runs CONCURRENTLY statements outside one); a BEGIN or COMMIT in the file fights that.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast

from airflow_provider_expand.engine.lint.context import FileContext
from airflow_provider_expand.engine.lint.findings import Rule
from airflow_provider_expand.engine.statements import Statement


def _concurrently_in_block(statement: Statement, ctx: FileContext) -> Iterator[str]:
    if ctx.in_transaction_block and statement.concurrently:
        first = statement.sql.split(None, 3)[:3]
        yield f"{' '.join(first)} ... runs inside the BEGIN above it: PostgreSQL refuses it in a transaction block"


def _transaction_control(statement: Statement, ctx: FileContext) -> Iterator[str]:
    node = statement.node
    if isinstance(node, ast.TransactionStmt):
        word = getattr(node.kind, "name", "TRANSACTION").removeprefix("TRANS_STMT_").replace("_", " ")
        yield (
            f"{word} in a phase file: the runner manages transactions itself, and a COMMIT midway would let "
            "the phase apply in part"
        )


CONCURRENTLY_IN_TRANSACTION = Rule(
    "EX701",
    "concurrently-in-transaction",
    "remove the BEGIN/COMMIT around it: the runner runs CONCURRENTLY statements on their own, in autocommit",
    _concurrently_in_block,
)
TRANSACTION_CONTROL = Rule(
    "EX702",
    "transaction-control",
    "remove it: statements between CONCURRENTLY ones already run in one transaction",
    _transaction_control,
)

RULES = (CONCURRENTLY_IN_TRANSACTION, TRANSACTION_CONTROL)
