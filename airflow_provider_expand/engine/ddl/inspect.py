"""What the catalog says about the tables a DDL statement touches, for the runner's logs and clean-up.

Who holds locks on them (the likely reason a try timed out), which invalid indexes sit on them (what a
failed ``CREATE INDEX CONCURRENTLY`` leaves behind, to be dropped rather than left or accepted), and the
index a concurrent build names (already built by a try that crashed before its checkpoint, or invalid).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import pglast
import psycopg
from pglast import ast
from pglast.enums import AlterTableType
from pglast.parser import ParseError
from pglast.stream import RawStream
from pglast.visitors import referenced_relations

from airflow_provider_expand.engine.redact import query_text
from airflow_provider_expand.engine.statements import Statement

IndexName = tuple[str, str]  # (schema, name)


def lock_holders(conn: psycopg.Connection, stmt: Statement) -> str:
    """Who holds locks on the relations the statement touches (best effort: a hint for the log)."""
    names = sorted(referenced_relations(stmt.node))
    if not names:
        return "could not tell which lock"
    try:
        rows = _holders(conn, names)
    except psycopg.Error as exc:  # a hint must never hide the error it explains
        return f"on {', '.join(names)}; could not list the holders: {exc}"
    if not rows:
        return f"on {', '.join(names)}; no holder left on it now"
    return "; ".join(
        f"{rel} held by pid {pid} ({mode}, {state}, transaction open {age}s: {query_text(query, 80)})"
        for rel, pid, mode, state, age, query in rows
    )


def _holders(conn: psycopg.Connection, names: list[str]) -> list[tuple[Any, ...]]:
    return conn.execute(
        """
        SELECT l.relation::regclass::text, l.pid, l.mode, coalesce(a.state, '?'),
               coalesce(extract(epoch FROM now() - a.xact_start)::int, 0), left(coalesce(a.query, ''), 80)
          FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.locktype = 'relation' AND l.granted AND l.pid <> pg_backend_pid()
           AND l.relation IN (SELECT to_regclass(n) FROM unnest(%s::text[]) AS n)
         ORDER BY a.xact_start NULLS LAST LIMIT 3
        """,
        (names,),
    ).fetchall()


_INVALID_INDEXES = """
SELECT n.nspname, c.relname FROM pg_index i
  JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE NOT i.indisvalid AND (
       i.indrelid IN (SELECT to_regclass(n) FROM unnest(%(names)s::text[]) AS n)
    OR i.indrelid IN (SELECT x.indrelid FROM pg_index x
                       WHERE x.indexrelid IN (SELECT to_regclass(n) FROM unnest(%(names)s::text[]) AS n)))
"""


def invalid_indexes(conn: psycopg.Connection, stmt: Statement) -> set[IndexName]:
    """(schema, name) of invalid indexes on the statement's tables: a failed CONCURRENTLY build leaves one."""
    names = sorted(referenced_relations(stmt.node))
    if not names:
        return set()
    return {(r[0], r[1]) for r in conn.execute(_INVALID_INDEXES, {"names": names}).fetchall()}


def stale_build(conn: psycopg.Connection, stmt: Statement) -> set[IndexName]:
    """An invalid index already named like the one ``CREATE INDEX CONCURRENTLY`` builds: a crashed try's.

    Left alone it makes the build fail ("already exists"), or with ``IF NOT EXISTS`` silently "succeed".
    """
    node = stmt.node
    if not (isinstance(node, ast.IndexStmt) and node.concurrent and node.idxname and node.relation):
        return set()
    rows = conn.execute(
        """
        SELECT n.nspname, c.relname FROM pg_index i
          JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE NOT i.indisvalid AND c.relname = %s AND i.indrelid = to_regclass(%s)
        """,
        (node.idxname, RawStream()(node.relation)),
    ).fetchall()
    return {(r[0], r[1]) for r in rows}


@dataclass(frozen=True)
class BuiltIndex:
    """The index a ``CREATE INDEX CONCURRENTLY name ON table`` names, as the catalog has it now."""

    schema: str
    name: str
    valid: bool
    on_table: bool  # on the statement's table (not another one that took the name)
    table: str
    definition: str  # pg_get_indexdef

    @property
    def key(self) -> IndexName:
        return (self.schema, self.name)


def built_index(conn: psycopg.Connection, stmt: Statement) -> BuiltIndex | None:
    """The index named by a concurrent build, in its table's schema (where it is created); None if absent."""
    node = stmt.node
    if not (isinstance(node, ast.IndexStmt) and node.concurrent and node.idxname and node.relation):
        return None
    row = conn.execute(
        """
        SELECT n.nspname, c.relname, i.indisvalid, i.indrelid = to_regclass(%(table)s),
               i.indrelid::regclass::text, pg_get_indexdef(i.indexrelid)
          FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relname = %(name)s
           AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = to_regclass(%(table)s))
        """,
        {"name": node.idxname, "table": RawStream()(node.relation)},
    ).fetchone()
    if row is None:
        return None
    return BuiltIndex(str(row[0]), str(row[1]), bool(row[2]), bool(row[3]), str(row[4]), str(row[5]))


def _shape(node: ast.IndexStmt) -> tuple[object, ...]:
    """What tells two index definitions apart robustly: expressions and predicates come back from
    ``pg_get_indexdef`` with casts and parentheses added, so only their presence counts."""

    def elems(params: tuple[ast.Node, ...] | None) -> tuple[str, ...]:
        return tuple(
            str(e.name) if isinstance(e, ast.IndexElem) and e.name else "<expression>" for e in params or ()
        )

    return (
        bool(node.unique),
        bool(node.nulls_not_distinct),
        str(node.accessMethod or "btree"),
        elems(node.indexParams),
        elems(node.indexIncludingParams),
        node.whereClause is not None,
    )


def same_definition(stmt: Statement, existing: BuiltIndex) -> bool | None:
    """Whether ``existing`` is the index ``stmt`` builds (by :func:`_shape`); None if that cannot be told."""
    try:
        parsed = pglast.parse_sql(existing.definition)[0].stmt
    except (ParseError, IndexError):
        return None
    if not isinstance(parsed, ast.IndexStmt) or not isinstance(stmt.node, ast.IndexStmt):
        return None
    return _shape(parsed) == _shape(stmt.node)


DetachState = Literal["attached", "pending", "detached"]


def detached_partition(stmt: Statement) -> tuple[ast.RangeVar, ast.RangeVar] | None:
    """(parent, partition) of ``ALTER TABLE parent DETACH PARTITION partition CONCURRENTLY``."""
    node = stmt.node
    if not isinstance(node, ast.AlterTableStmt) or node.relation is None:
        return None
    for cmd in node.cmds or ():
        if (
            isinstance(cmd, ast.AlterTableCmd)
            and cmd.subtype == AlterTableType.AT_DetachPartition
            and isinstance(cmd.def_, ast.PartitionCmd)
            and cmd.def_.concurrent
            and cmd.def_.name is not None
        ):
            return node.relation, cmd.def_.name
    return None


def detach_state(conn: psycopg.Connection, stmt: Statement) -> DetachState | None:
    """Where a ``DETACH PARTITION ... CONCURRENTLY`` stands: ``pending`` after an interrupted try (only
    ``FINALIZE`` completes it), ``detached`` once done; None if it is no such statement or no such table."""
    found = detached_partition(stmt)
    if found is None:
        return None
    parent, partition = (RawStream()(r) for r in found)
    row = conn.execute(
        """
        SELECT to_regclass(%(part)s) IS NOT NULL,
               (SELECT inhdetachpending FROM pg_inherits
                 WHERE inhrelid = to_regclass(%(part)s) AND inhparent = to_regclass(%(parent)s))
        """,
        {"part": partition, "parent": parent},
    ).fetchone()
    if row is None or not row[0]:
        return None
    if row[1] is None:
        return "detached"
    return "pending" if row[1] else "attached"


def index_names(indexes: set[IndexName]) -> str:
    return ", ".join(f"{schema}.{name}" for schema, name in sorted(indexes))
