"""Rules about indexes: building, dropping or rebuilding one without ``CONCURRENTLY`` blocks every write
to the table for as long as it takes ('Adăugare Index': ALWAYS use CONCURRENTLY). ``CREATE INDEX
CONCURRENTLY IF NOT EXISTS`` is fine, and the robust form: the runner checks ``indisvalid`` after every
concurrent build and drops and rebuilds an invalid index, whoever left it.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast
from pglast.enums import ObjectType

from airflow_provider_expand.engine.lint.context import FileContext, drop_targets, table_name
from airflow_provider_expand.engine.lint.findings import Rule
from airflow_provider_expand.engine.statements import Statement


def _create_index(statement: Statement, ctx: FileContext) -> Iterator[str]:
    node = statement.node
    if isinstance(node, ast.IndexStmt) and not node.concurrent and not ctx.is_new_table(node.relation):
        name = node.idxname or "an index"
        yield f"builds {name} on {table_name(node.relation)} without CONCURRENTLY: writes to it wait for the whole build"


def _drop_index(statement: Statement, ctx: FileContext) -> Iterator[str]:
    node = statement.node
    if isinstance(node, ast.DropStmt) and node.removeType == ObjectType.OBJECT_INDEX and not node.concurrent:
        names = [name for key in drop_targets(node) if (name := key[1]) and key not in ctx.created]
        if names:
            yield f"drops index {', '.join(names)} without CONCURRENTLY: it waits for, then blocks, every query"


def _unnamed_index(statement: Statement, ctx: FileContext) -> Iterator[str]:
    node = statement.node
    if isinstance(node, ast.IndexStmt) and not node.idxname and not ctx.is_new_table(node.relation):
        how = "a CONCURRENTLY build" if node.concurrent else "an index"
        yield (
            f"{how} on {table_name(node.relation)} without a name: PostgreSQL picks one, so IF NOT EXISTS "
            "cannot guard a retry (a second index is built), the runner cannot check it valid by name, and "
            "rollback.sql cannot drop it by name"
        )


def _reindex(statement: Statement, ctx: FileContext) -> Iterator[str]:
    node = statement.node
    if isinstance(node, ast.ReindexStmt) and not statement.concurrently:
        yield "REINDEX without CONCURRENTLY locks out writes (and reads using the index) until it ends"


CREATE_INDEX = Rule(
    code="EX201",
    name="create-index-blocking",
    alternative="CREATE INDEX CONCURRENTLY IF NOT EXISTS (the runner rebuilds it if it is left invalid), or "
    "list it under indexes: in migration.yaml (built concurrently, checked valid)",
    check=_create_index,
    explanation="""A plain CREATE INDEX holds a SHARE lock on the table for the whole build: reads go
    on, every write waits. An index on a table created earlier in the same file is fine (it is empty).

    CREATE [UNIQUE] INDEX CONCURRENTLY IF NOT EXISTS is the recommended form. After every concurrent
    build the runner reads pg_index.indisvalid of that index and drops (DROP INDEX CONCURRENTLY) and
    rebuilds an invalid one, also one left before the run that IF NOT EXISTS alone would accept. A
    retried build whose index already exists and is valid on the same table (a crash between the
    build and its checkpoint) counts as applied, with or without IF NOT EXISTS.""",
    squawk=("require-concurrent-index-creation",),
    cost="scan",
)
DROP_INDEX = Rule(
    code="EX202",
    name="drop-index-blocking",
    alternative="DROP INDEX CONCURRENTLY",
    check=_drop_index,
    explanation=(
        "A plain DROP INDEX takes an ACCESS EXCLUSIVE lock on the index's table: it queues behind every "
        "running query and every query queues behind it. CONCURRENTLY waits for them instead of blocking."
    ),
    squawk=("require-concurrent-index-deletion",),
)
REINDEX = Rule(
    code="EX203",
    name="reindex-blocking",
    alternative="REINDEX (CONCURRENTLY) ...",
    check=_reindex,
    explanation=(
        "REINDEX without CONCURRENTLY locks out writes to the table, and reads that would use the index, "
        "until the rebuild ends."
    ),
    squawk=("require-concurrent-reindex",),
    cost="scan",
)
UNNAMED_INDEX = Rule(
    code="EX204",
    name="unnamed-index",
    alternative="name it: CREATE INDEX CONCURRENTLY IF NOT EXISTS <table>_<columns>_idx ON ...",
    check=_unnamed_index,
    explanation=(
        "Without a name PostgreSQL generates one (products_name_idx, then products_name_idx1 on a retry): "
        "a retried or resumed phase builds a duplicate index instead of finding the first, IF NOT EXISTS "
        "needs a name to work, the runner's validity check and rollback.sql's DROP INDEX need the name "
        "too. An index on a table created earlier in the same file is exempt (it goes with the table)."
    ),
    squawk=("prefer-robust-stmts",),
)

RULES = (CREATE_INDEX, DROP_INDEX, REINDEX, UNNAMED_INDEX)
