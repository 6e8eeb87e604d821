"""What the target database says about the tables a migration touches (``lint --conn-id``): whether a
table exists, and how big it is, so a finding says "rewrites 40 GB" rather than "rewrites the table".
Read-only catalog queries, one per table, cached; without a connection lint never asks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
from pglast import ast
from psycopg import sql

from airflow_provider_expand.engine.errors import translated
from airflow_provider_expand.engine.lint.findings import Cost

_SIZE = """
SELECT c.oid::regclass::text,
       coalesce(sum(pg_total_relation_size(t.relid)), 0)::bigint,
       coalesce(sum(pg_table_size(t.relid)), 0)::bigint,
       (sum(l.reltuples) FILTER (WHERE t.isleaf))::bigint,
       bool_and(l.reltuples >= 0) FILTER (WHERE t.isleaf)
FROM pg_class c
CROSS JOIN LATERAL (  -- a partitioned table's partitions; a plain table is its own tree
    SELECT relid, isleaf FROM pg_partition_tree(c.oid)
    UNION ALL
    SELECT c.oid, true WHERE NOT EXISTS (SELECT FROM pg_partition_tree(c.oid))
) t
JOIN pg_class l ON l.oid = t.relid
WHERE c.oid = to_regclass(%s)
GROUP BY c.oid
"""


@dataclass(frozen=True)
class TableSize:
    """A relation of the target database: its name as PostgreSQL prints it, bytes with indexes and
    TOAST (``total``, what a rewrite writes) and without indexes (``heap``, what a scan reads); rows
    are the planner's estimate (None before the first ANALYZE). Partitions are summed."""

    name: str
    total_bytes: int
    heap_bytes: int
    rows: int | None

    def cost(self, cost: Cost) -> str:
        """``rewrites 40 GB (products, ~12,000,000 rows)``, for a finding's message."""
        size, verb = (self.total_bytes, "rewrites") if cost == "rewrite" else (self.heap_bytes, "scans")
        rows = f", ~{self.rows:,} rows" if self.rows is not None else ""
        return f"{verb} {human_bytes(size)} ({self.name}{rows})"


def human_bytes(size: int) -> str:
    """Bytes in the units ``pg_size_pretty`` uses (1024-based: kB, MB, GB, TB), one decimal past 10."""
    value = float(size)
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            if unit == "bytes":
                return f"{int(value)} bytes"
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


class LiveSchema:
    """The target database's tables as lint needs them; names resolve with the connection's
    ``search_path``, as the migration's own statements will."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self._conn = conn
        self._cache: dict[tuple[str | None, str], TableSize | None] = {}

    def table(self, relation: ast.RangeVar) -> TableSize | None:
        """The relation's size, or None when it does not exist in the target database."""
        key = (relation.schemaname or None, str(relation.relname))
        if key not in self._cache:
            parts = [p for p in key if p]
            name = sql.SQL(".").join(sql.Identifier(p) for p in parts).as_string(self._conn)
            with translated(), self._conn.cursor() as cur:
                row = cur.execute(_SIZE, (name,)).fetchone()
            if row is None:
                self._cache[key] = None
            else:
                name_, total, heap, rows, analyzed = row
                self._cache[key] = TableSize(
                    str(name_), int(total), int(heap), int(rows) if analyzed else None
                )
        return self._cache[key]

    def exists(self, relation: ast.RangeVar) -> bool:
        return self.table(relation) is not None


def statement_tables(node: ast.Node | None) -> Iterator[ast.RangeVar]:
    """The relations a statement works on, for the size of what it rewrites or scans."""
    if isinstance(
        node,
        ast.AlterTableStmt
        | ast.IndexStmt
        | ast.ClusterStmt
        | ast.ReindexStmt
        | ast.UpdateStmt
        | ast.DeleteStmt,
    ):
        if isinstance(node.relation, ast.RangeVar):
            yield node.relation
    elif isinstance(node, ast.VacuumStmt):
        for rel in node.rels or ():
            if isinstance(rel, ast.VacuumRelation) and isinstance(rel.relation, ast.RangeVar):
                yield rel.relation
    elif isinstance(node, ast.LockStmt):
        yield from (r for r in node.relations or () if isinstance(r, ast.RangeVar))
