"""Rules about transaction control in a phase file. The runner gives each group of statements its own
transaction (and runs CONCURRENTLY statements outside one); a BEGIN or COMMIT in the file, or a COMMIT
inside a DO block, fights that.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast

from airflow_provider_expand.engine.lint.context import FileContext
from airflow_provider_expand.engine.lint.findings import Rule
from airflow_provider_expand.engine.lint.session import do_body, plpgsql_kinds
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
    tree = do_body(statement)
    kinds = plpgsql_kinds(tree) if tree is not None else set()
    for kind, word in (("PLpgSQL_stmt_commit", "COMMIT"), ("PLpgSQL_stmt_rollback", "ROLLBACK")):
        if kind in kinds:
            yield (
                f"{word} inside a DO block: the runner runs the block inside its transaction, where PostgreSQL "
                "refuses it (invalid transaction termination), and a batch loop committing as it goes belongs "
                "in a backfill"
            )


CONCURRENTLY_IN_TRANSACTION = Rule(
    code="EX701",
    name="concurrently-in-transaction",
    alternative="remove the BEGIN/COMMIT around it: the runner runs CONCURRENTLY statements on their own, "
    "in autocommit",
    check=_concurrently_in_block,
    explanation=(
        "CREATE INDEX CONCURRENTLY, DROP INDEX CONCURRENTLY, REINDEX CONCURRENTLY, DETACH PARTITION "
        "CONCURRENTLY and VACUUM cannot run inside a transaction block; without a BEGIN in the file the "
        "runner already runs each of them alone, in autocommit."
    ),
    squawk=("ban-concurrent-index-creation-in-transaction",),
)
TRANSACTION_CONTROL = Rule(
    code="EX702",
    name="transaction-control",
    alternative="remove it: statements between CONCURRENTLY ones already run in one transaction; a batch "
    "loop belongs in backfill: in migration.yaml",
    check=_transaction_control,
    explanation=(
        "The runner owns the transactions: each run of statements between CONCURRENTLY ones is one "
        "transaction, checkpointed in the ledger so a retry resumes after it. A BEGIN, COMMIT, ROLLBACK "
        "or SAVEPOINT in the file (a nested BEGIN, a BEGIN never committed, a COMMIT midway) would let "
        "the phase apply in part behind the ledger's back; the runner refuses such a file."
    ),
    squawk=("transaction-nesting", "ban-uncommitted-transaction"),
)

RULES = (CONCURRENTLY_IN_TRANSACTION, TRANSACTION_CONTROL)
