"""What a backfill will run, checked before any row changes: the spec, its SQL fragments, the table and key.

``set`` and ``where`` come from the migration file, but they are still pasted into statements, so they are
parsed with pglast as ``UPDATE t SET <set> WHERE <where>`` (exactly one UPDATE, nothing else) and only the
*deparsed* parse tree is ever run: a comment or a second statement cannot ride along. The database then
checks names and types with ``EXPLAIN`` (plans, runs nothing).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import psycopg
from pglast import ast
from pglast.stream import RawStream
from psycopg import sql

# BackfillError is re-exported for backfill.ranges, which imports it from here.
from airflow_provider_expand.engine import statements
from airflow_provider_expand.engine.backfill.errors import BackfillError as BackfillError
from airflow_provider_expand.engine.backfill.errors import BackfillInputError
from airflow_provider_expand.engine.backfill.key import Key, key_columns, show_key
from airflow_provider_expand.engine.errors import database_error, is_transient_sqlstate
from airflow_provider_expand.engine.statements import (
    ASSIGNMENTS_TABLE,
    FragmentError,
    parse_assignments,
    parse_fragment,
)

_PLACEHOLDER_TABLE = ASSIGNMENTS_TABLE
# A batch may run this many times its target before the engine splits it; never less than the floor.
STATEMENT_TIMEOUT_FACTOR = 10
STATEMENT_TIMEOUT_FLOOR = dt.timedelta(seconds=1)
STATEMENT_TIMEOUT_FIXED = dt.timedelta(seconds=30)  # batches of a fixed size (no target_batch_time)


@dataclass(frozen=True)
class BackfillSpec:
    """One backfill of the migration spec (DESIGN.md ``backfill:``), in engine types.

    ``batch_size`` is the starting number of rows (in key order) per batch; with ``target_batch_time`` set
    it adapts towards that time per batch transaction, between ``min_batch_size`` and ``max_batch_size``
    (defaults: ``min(batch_size, 100)`` and ``max(batch_size, 100_000)``). ``max_sweep_rounds`` bounds the
    final sweep: when rows still match ``where`` after that many rounds, something keeps creating them.
    ``statement_timeout`` bounds each batch statement (default: :attr:`batch_statement_timeout`); a batch
    that hits it is split in half and retried, down to one row. ``key`` names the column(s) to walk; by
    default the primary key (any number of columns), else the narrowest unique index on NOT NULL columns.
    """

    table: str
    set: str
    where: str | None
    key: str | tuple[str, ...] | None = None
    batch_size: int = 10_000
    target_batch_time: dt.timedelta | None = dt.timedelta(milliseconds=50)
    pause: dt.timedelta = dt.timedelta(0)
    partitions: int = 1
    min_batch_size: int | None = None
    max_batch_size: int | None = None
    max_sweep_rounds: int = 20
    statement_timeout: dt.timedelta | None = None

    @property
    def step(self) -> str:
        """The ledger step name: ``backfill:<table>`` (one part per partition)."""
        return f"backfill:{self.table}"

    @property
    def batch_bounds(self) -> tuple[int, int]:
        low = self.min_batch_size if self.min_batch_size is not None else min(self.batch_size, 100)
        high = self.max_batch_size if self.max_batch_size is not None else max(self.batch_size, 100_000)
        return low, high

    @property
    def batch_statement_timeout(self) -> dt.timedelta:
        """How long one batch statement may run: the spec's value, else 10x the target (at least 1 s)."""
        if self.statement_timeout is not None:
            return self.statement_timeout
        if self.target_batch_time is None:
            return STATEMENT_TIMEOUT_FIXED
        return max(self.target_batch_time * STATEMENT_TIMEOUT_FACTOR, STATEMENT_TIMEOUT_FLOOR)

    def check(self, partition: int) -> None:
        """The checks that need no database: numbers and ranges."""

        def whole(field: str, value: object, minimum: int) -> None:
            if not isinstance(value, int) or isinstance(value, bool):
                raise BackfillInputError(field, f"must be an integer, got {value!r}")
            if value < minimum:
                raise BackfillInputError(field, f"must be >= {minimum}, got {value}")

        whole("batch_size", self.batch_size, 1)
        whole("partitions", self.partitions, 1)
        whole("partition", partition, 0)
        whole("max_sweep_rounds", self.max_sweep_rounds, 1)
        if partition >= self.partitions:
            raise BackfillInputError(
                "partition",
                f"must be in 0..{self.partitions - 1} (partitions={self.partitions}), got {partition}",
            )
        low, high = self.batch_bounds
        whole("min_batch_size", low, 1)
        whole("max_batch_size", high, low)
        if self.target_batch_time is not None and self.target_batch_time <= dt.timedelta(0):
            raise BackfillInputError("target_batch_time", f"must be > 0, got {self.target_batch_time}")
        if self.pause < dt.timedelta(0):
            raise BackfillInputError("pause", f"must be >= 0, got {self.pause}")
        if self.statement_timeout is not None and self.statement_timeout < dt.timedelta(milliseconds=1):
            raise BackfillInputError("statement_timeout", f"must be >= 1ms, got {self.statement_timeout}")


@dataclass(frozen=True)
class UpdateFragments:
    """``set`` and ``where`` as deparsed by pglast (safe to paste), and the columns ``set`` assigns."""

    set_sql: str
    where_sql: str
    assigned: tuple[str, ...]


def _parse(text: str, field: str) -> ast.Node | None:
    try:
        return parse_fragment(text)
    except FragmentError as exc:
        raise BackfillInputError(field, str(exc)) from exc


def parse_fragments(set_text: str, where_text: str | None) -> UpdateFragments:
    """Parse ``UPDATE t SET <set> WHERE <where>``; accept exactly one plain UPDATE, return its pieces."""
    if not set_text or not set_text.strip():
        raise BackfillInputError("set", "must not be empty (e.g. 'name = title')")
    if where_text is None or not where_text.strip():
        raise BackfillInputError(
            "where",
            "is required (e.g. 'name IS NULL AND title IS NOT NULL'): it selects the rows still to do, "
            "which makes the backfill resumable and lets the final sweep prove it complete",
        )
    try:
        parse_assignments(set_text)
    except FragmentError as exc:
        raise BackfillInputError("set", str(exc) if exc.rule == "syntax" else f"{set_text!r} {exc}") from exc
    stmt = _parse(f"UPDATE {_PLACEHOLDER_TABLE} SET {set_text} WHERE {where_text}", "where")
    if not isinstance(stmt, ast.UpdateStmt):
        raise BackfillInputError("where", f"{where_text!r} must be one condition, no ';'")
    if stmt.whereClause is None or stmt.fromClause or stmt.returningClause or stmt.withClause:
        raise BackfillInputError("where", f"{where_text!r} must be a condition only (no FROM, RETURNING)")
    where_node = stmt.whereClause
    stmt.whereClause = None
    printed = RawStream()(stmt)
    prefix = f"UPDATE {_PLACEHOLDER_TABLE} SET "
    if not printed.startswith(prefix):  # pragma: no cover - pglast prints UPDATE this way
        raise BackfillInputError("set", f"{set_text!r} cannot be reprinted safely")
    assigned = tuple(t.name for t in stmt.targetList or () if isinstance(t, ast.ResTarget) and t.name)
    return UpdateFragments(
        set_sql=printed[len(prefix) :], where_sql=RawStream()(where_node), assigned=assigned
    )


def parse_table(table: str) -> tuple[str | None, str]:
    """``products`` / ``shop.products`` / ``"Odd Name"`` -> (schema or None, name), via the real parser."""
    if not table or not table.strip():
        raise BackfillInputError("table", "must not be empty")
    try:
        return statements.parse_table(table)
    except FragmentError as exc:
        raise BackfillInputError("table", str(exc)) from exc


def _literal_sql(text: str) -> sql.SQL:
    """A deparsed fragment inside a composed statement: ``%`` doubled, as every statement binds params."""
    return sql.SQL(text.replace("%", "%%"))


@dataclass(frozen=True)
class Target:
    """The table, key and fragments of a validated backfill, ready to compose statements from.

    The key is one or more columns, compared as a row (``(a, b) > (%(lower_0)s, %(lower_1)s)``, as pgroll
    does), so a composite key walks its index in order like a single column. Values are bound as text and
    take the column's type from the comparison.
    """

    label: str
    table: sql.Composed
    columns: tuple[str, ...]
    set_sql: sql.SQL
    where_sql: sql.SQL
    by_ctid: bool
    reltuples: float

    @property
    def key(self) -> str:
        """The key column(s), for messages: ``id`` or ``shop_id, id``."""
        return ", ".join(self.columns)

    @property
    def idents(self) -> list[sql.Identifier]:
        return [sql.Identifier(c) for c in self.columns]

    def row(self, qualifier: str | None = None) -> sql.Composed:
        """``(a, b)``: the key as a row (``(t.a, t.b)`` with a qualifier)."""
        names = (sql.Identifier(qualifier, c) for c in self.columns) if qualifier else self.idents
        return sql.SQL("({})").format(sql.SQL(", ").join(names))

    def texts(self, alias: str | None = None) -> sql.Composed:
        """``a::text, b::text``: the key's text form, column by column (of alias ``alias``'s ``_k0, ...``)."""
        if alias is not None:
            cols = [sql.Identifier(alias, f"_k{i}") for i in range(len(self.columns))]
        else:
            cols = self.idents
        return sql.SQL(", ").join(sql.SQL("{}::text").format(c) for c in cols)

    def aliased(self) -> sql.Composed:
        """``a AS _k0, b AS _k1``: the key under positional names (so ORDER BY sorts the values, not text)."""
        return sql.SQL(", ").join(
            sql.SQL("{} AS {}").format(c, sql.Identifier(f"_k{i}")) for i, c in enumerate(self.idents)
        )

    def order(self, descending: bool = False) -> sql.Composed:
        direction = sql.SQL(" DESC") if descending else sql.SQL("")
        return sql.SQL(", ").join(sql.SQL("{}{}").format(c, direction) for c in self.idents)

    def placeholders(self, name: str) -> sql.Composed:
        """``(%(name_0)s, %(name_1)s)``: a key value bound with :meth:`bind`."""
        marks = (sql.Placeholder(f"{name}_{i}") for i in range(len(self.columns)))
        return sql.SQL("({})").format(sql.SQL(", ").join(marks))

    def bind(self, name: str, key: Key | None) -> dict[str, str | None]:
        """The parameters of :meth:`placeholders` for ``key`` (all None for no key)."""
        if key is not None and len(key) != len(self.columns):
            raise BackfillError(
                f"key value {show_key(key)} of {self.label} does not fit its key ({self.key}): was the key "
                "changed midway? Reset the migration's backfill to start over with the new key"
            )
        return {f"{name}_{i}": (key[i] if key is not None else None) for i in range(len(self.columns))}

    def range_condition(self, lower: Key | None, upper: Key | None) -> tuple[sql.Composable, dict[str, Any]]:
        """``(key) > lower AND (key) <= upper`` (leaving out the unbounded sides) and its parameters."""
        parts: list[sql.Composable] = [sql.SQL("true")]
        params: dict[str, Any] = {}
        if lower is not None:
            parts.append(sql.SQL("{} > {}").format(self.row(), self.placeholders("lower")))
            params.update(self.bind("lower", lower))
        if upper is not None:
            parts.append(sql.SQL("{} <= {}").format(self.row(), self.placeholders("upper")))
            params.update(self.bind("upper", upper))
        return sql.SQL(" AND ").join(parts), params

    def encode(self, key: Key | None) -> str | None:
        """A key as the ledger stores it (``last_key``, range bounds): a single column's text form as it is
        (so checkpoints of earlier releases read back unchanged), a composite key as a JSON array."""
        if key is None:
            return None
        self.bind("key", key)
        return key[0] if len(self.columns) == 1 else json.dumps(list(key))

    def decode(self, stored: str | None) -> Key | None:
        """The key :meth:`encode` stored; a value that does not fit this key is refused, naming both."""
        if stored is None:
            return None
        if len(self.columns) == 1:
            return (stored,)
        try:
            values = json.loads(stored)
        except ValueError:
            values = None
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise BackfillError(
                f"the ledger's key {stored!r} for {self.label} is not a value of its key ({self.key}): was the "
                "key changed midway? Reset the migration's backfill to start over with the new key"
            )
        key = tuple(values)
        self.bind("key", key)
        return key


def _table_row(conn: psycopg.Connection, schema: str | None, name: str) -> tuple[int, str, float, bool]:
    qualified = (sql.Identifier(schema, name) if schema else sql.Identifier(name)).as_string(conn)
    row = conn.execute(
        "SELECT c.oid, c.relkind, c.reltuples, c.relhassubclass, row_security_active(c.oid), current_user"
        " FROM pg_class c WHERE c.oid = to_regclass(%s)",
        (qualified,),
    ).fetchone()
    if row is None:
        where = f"schema {schema!r}" if schema else "the search_path"
        raise BackfillInputError("table", f"{qualified} does not exist in {where}")
    oid, relkind, reltuples, has_children, rls, role = row
    if relkind not in ("r", "p"):
        raise BackfillInputError("table", f"{qualified} is not a table (relkind {relkind!r})")
    if rls:  # the backfill would see, and the sweep would vouch for, only the rows the policies show
        raise BackfillInputError(
            "table",
            f"row level security of {qualified} applies to role {role!r}: run the backfill as the table owner "
            "or a BYPASSRLS role",
        )
    return int(oid), str(relkind), float(reltuples), bool(has_children)


def _explain(conn: psycopg.Connection, query: sql.Composable, field: str, text: str, label: str) -> None:
    """Let PostgreSQL resolve names and types of ``query`` without running it; blame ``field``."""
    try:
        with conn.transaction():
            conn.execute("SET LOCAL lock_timeout = '5s'")
            conn.execute(sql.SQL("EXPLAIN {}").format(query), {})
    except psycopg.Error as exc:
        if is_transient_sqlstate(exc.sqlstate):
            # a locked table or a lost connection says nothing about the spec: the retry checks again
            raise database_error(exc, f"backfill of {label}: could not check {field}") from exc
        message = (exc.diag.message_primary or str(exc)).strip()
        raise BackfillInputError(field, f"{text!r} is not valid for table {label}: {message}") from exc


def resolve_target(conn: psycopg.Connection, spec: BackfillSpec) -> Target:
    """Check the spec against the database (table, key, names and types in set/where); change nothing."""
    fragments = parse_fragments(spec.set, spec.where)
    schema, name = parse_table(spec.table)
    oid, relkind, reltuples, has_children = _table_row(conn, schema, name)
    table = sql.Identifier(schema, name) if schema else sql.Identifier(name)
    label = table.as_string(conn)
    columns = key_columns(conn, oid, label, spec.key)
    assigned = [c for c in columns if c in fragments.assigned]
    if assigned:
        raise BackfillInputError(
            "set", f"{spec.set!r} assigns the key column {assigned[0]!r}; the walk needs it fixed"
        )
    set_sql, where_sql = _literal_sql(fragments.set_sql), _literal_sql(fragments.where_sql)
    composed = sql.Composed([table])
    _explain(
        conn, sql.SQL("SELECT 1 FROM {} WHERE ({})").format(table, where_sql), "where", str(spec.where), label
    )
    _explain(
        conn,
        sql.SQL("UPDATE {} SET {} WHERE ({})").format(table, set_sql, where_sql),
        "set",
        spec.set,
        label,
    )
    return Target(
        label=label,
        table=composed,
        columns=columns,
        set_sql=set_sql,
        where_sql=where_sql,
        # ctid is unique only within one heap: a partitioned or inherited table is matched by
        # (tableoid, ctid) within the batch's key window instead.
        by_ctid=relkind == "r" and not has_children,
        reltuples=reltuples,
    )
