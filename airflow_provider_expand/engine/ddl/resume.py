"""Autocommit statements made safe to run again: a ``CONCURRENTLY`` statement commits on its own, so a try
that crashed after it and before its checkpoint leaves it applied, and the re-run must recognise that.

A concurrent index build counts as applied when a valid index of its name is on its table (another
definition under that name is an error, unless ``IF NOT EXISTS`` asked to keep it); after a build the
index is checked ``indisvalid`` and an invalid one dropped and built again. A ``DETACH PARTITION ...
CONCURRENTLY`` interrupted mid-wait leaves the partition pending detach: it is finished with ``FINALIZE``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pglast import ast
from psycopg import sql

from airflow_provider_expand.engine.ddl.errors import DDLStatementError
from airflow_provider_expand.engine.ddl.inspect import (
    built_index,
    detach_state,
    detached_partition,
    same_definition,
)
from airflow_provider_expand.engine.statements import Statement

if TYPE_CHECKING:
    from airflow_provider_expand.engine.ddl.runner import Runner


def watched(stmt: Statement) -> bool:
    """The ``CONCURRENTLY`` statements that wait for other transactions to end (builds, index drops,
    partition detaches): PostgreSQL would apply ``lock_timeout`` to those waits too."""
    node = stmt.node
    return stmt.concurrently and isinstance(
        node, ast.IndexStmt | ast.ReindexStmt | ast.DropStmt | ast.AlterTableStmt
    )


def apply_alone(runner: Runner, stmt: Statement) -> None:
    """An autocommit statement; a concurrent build is skipped when an earlier try already built it,
    and checked ``indisvalid`` afterwards: an invalid index (``IF NOT EXISTS`` keeps one) is rebuilt."""
    if detached_partition(stmt) is not None:
        _detach(runner, stmt)
        return
    if not isinstance(stmt.node, ast.IndexStmt):
        runner.run_alone(stmt.sql, stmt.where, watched=watched(stmt))
        return
    if _already_built(runner, stmt):
        return
    for _ in range(2):
        runner.run_alone(stmt.sql, stmt.where, watched=True)
        built = built_index(runner.ddl, stmt)
        if built is None or (built.valid and built.on_table):
            return  # an unnamed build: PostgreSQL raised if it did not end valid
        if not built.on_table:
            raise DDLStatementError(
                stmt,
                f"IF NOT EXISTS skipped the build: the name {built.schema}.{built.name} belongs to an "
                f"index on {built.table}; give this index another name",
                "42P07",
            )
        runner.log.warning(
            "%s: index %s.%s is INVALID after the statement (IF NOT EXISTS accepted an invalid one): "
            "dropping and building it again",
            stmt.where,
            built.schema,
            built.name,
        )
        runner.leftovers.add(built.key)
        runner.drop_leftovers()
    raise DDLStatementError(stmt, "the index stayed INVALID after it was dropped and built again")


def _detach(runner: Runner, stmt: Statement) -> None:
    """``DETACH PARTITION ... CONCURRENTLY``, resumable: a try interrupted while it waited leaves the
    partition pending detach (the statement would now fail), so it is finalized; one that completed
    before its checkpoint counts as applied."""
    state = detach_state(runner.ddl, stmt)
    found = detached_partition(stmt)
    if state == "detached":
        runner.log.info("%s: the partition is already detached: the statement counts as applied", stmt.where)
        return
    if state == "pending" and found is not None:
        parent, partition = (sql.Identifier(*(n for n in (r.schemaname, r.relname) if n)) for r in found)
        finalize = sql.SQL("ALTER TABLE {} DETACH PARTITION {} FINALIZE").format(parent, partition)
        runner.log.warning(
            "%s: an earlier try left the partition pending detach: finishing it with %s",
            stmt.where,
            finalize.as_string(runner.ddl),
        )
        runner.run_alone(finalize, stmt.where, watched=True)
        return
    runner.run_alone(stmt.sql, stmt.where, watched=True)


def _already_built(runner: Runner, stmt: Statement) -> bool:
    """A valid index of the build's name on its table: an earlier try built it and stopped before
    its checkpoint (or, with IF NOT EXISTS, it was there before). Another definition is an error
    unless IF NOT EXISTS asked to accept it."""
    built = built_index(runner.ddl, stmt)
    if built is None or not built.valid or not built.on_table:
        return False
    same = same_definition(stmt, built)
    if same is False:
        if not (isinstance(stmt.node, ast.IndexStmt) and stmt.node.if_not_exists):
            raise DDLStatementError(
                stmt,
                f"index {built.schema}.{built.name} already exists on {built.table} with another "
                f"definition ({built.definition}); rename this one, or drop the old one first",
                "42P07",
            )
        runner.log.warning("%s: IF NOT EXISTS keeps %s, defined otherwise", stmt.where, built.definition)
    runner.log.info(
        "%s: index %s.%s already exists and is valid (%s%s): the statement counts as applied",
        stmt.where,
        built.schema,
        built.name,
        built.definition,
        "" if same else "; its definition could not be compared in full",
    )
    return True
