"""An index as the migration spec describes it, checked against the live catalog before anything changes.

Validation ends with a probe: the same index is created on an empty temporary copy of the table inside a
transaction that is rolled back. PostgreSQL itself then vets the predicate (types, IMMUTABLE functions,
columns) and hands back the normalised definition that an existing index is compared with.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import psycopg
from pglast.stream import RawStream
from psycopg import sql
from psycopg.rows import dict_row

from airflow_provider_expand.engine.statements import FragmentError, parse_predicate, table_identifier

MAX_IDENTIFIER_BYTES = 63  # NAMEDATALEN - 1: PostgreSQL silently truncates longer names.

# Relation kinds ``CREATE INDEX CONCURRENTLY`` accepts (partitioned tables are refused by PostgreSQL).
_INDEXABLE_KINDS = {"r": "table", "m": "materialized view"}


class IndexSpecError(ValueError):
    """Bad index input (table, column, predicate, method...): names the index and the field at fault."""

    def __init__(self, index: str, field: str, message: str) -> None:
        super().__init__(f"index {index!r}: {field}: {message}")
        self.index = index
        self.field = field
        self.message = message


@dataclass(frozen=True)
class IndexSpec:
    """One entry of the spec's ``indexes`` list: ``{name, table, columns, where, unique, using}``.

    ``table`` is ``name`` (found through ``search_path``) or ``schema.name``; the index is created in the
    table's schema. ``columns`` are plain column names; ``where`` is a boolean predicate on the table.
    """

    name: str
    table: str
    columns: tuple[str, ...]
    where: str | None = None
    unique: bool = False
    using: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns))


@dataclass(frozen=True)
class IndexSignature:
    """The normalised shape of an index, as the catalog stores it: what "same definition" compares."""

    unique: bool
    method: str
    columns: tuple[str, ...]
    opclasses: tuple[int, ...]
    collations: tuple[int, ...]
    options: tuple[int, ...]
    predicate: str | None
    has_expressions: bool
    definition: str = field(compare=False)


@dataclass(frozen=True)
class ExistingIndex:
    """An index found under the spec's name, in the table's schema."""

    oid: int
    table_oid: int
    valid: bool
    ready: bool
    signature: IndexSignature


@dataclass(frozen=True)
class ResolvedIndex:
    """A validated spec bound to the catalog: the qualified names and the statements to run."""

    spec: IndexSpec
    schema: str
    table: str
    table_oid: int
    predicate: str | None
    expected: IndexSignature

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.spec.name}"

    def create_statement(self) -> sql.Composed:
        """``CREATE [UNIQUE] INDEX CONCURRENTLY`` without ``IF NOT EXISTS``: existence is checked first."""
        return _create_sql(
            self.spec,
            sql.Identifier(self.spec.name),
            sql.Identifier(self.schema, self.table),
            self.predicate,
            concurrently=True,
        )

    def drop_statement(self) -> sql.Composed:
        return sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(
            sql.Identifier(self.schema, self.spec.name)
        )


def _create_sql(
    spec: IndexSpec,
    name: sql.Identifier,
    table: sql.Identifier,
    predicate: str | None,
    *,
    concurrently: bool,
) -> sql.Composed:
    parts: list[sql.Composable] = [sql.SQL("CREATE UNIQUE INDEX" if spec.unique else "CREATE INDEX")]
    if concurrently:
        parts.append(sql.SQL("CONCURRENTLY"))
    parts += [name, sql.SQL("ON"), table]
    if spec.using:
        parts += [sql.SQL("USING"), sql.Identifier(spec.using)]
    parts.append(sql.SQL("({})").format(sql.SQL(", ").join(sql.Identifier(c) for c in spec.columns)))
    if predicate:
        # ``predicate`` is pglast's deparse of a single validated expression, never the raw input.
        parts += [sql.SQL("WHERE"), sql.SQL(predicate)]
    return sql.SQL(" ").join(parts)


def normalize_predicate(index: str, where: str) -> str:
    """Parse ``where`` as one boolean expression with pglast and return its canonical text.

    Anything that is not exactly one expression (a second statement, ``ORDER BY``, ``UNION``, a
    subquery) is refused, so the predicate can never smuggle SQL into the statement.
    """
    if not where.strip():
        raise IndexSpecError(index, "where", "is empty")
    try:
        node = parse_predicate(where, subqueries=False)
    except FragmentError as exc:
        shown = f" (in {where!r})" if exc.rule == "syntax" else f": {where!r}"
        raise IndexSpecError(index, "where", f"{exc}{shown}") from exc
    return str(RawStream()(node))


def _check_shape(spec: IndexSpec) -> None:
    name = spec.name
    if not name or len(name.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
        raise IndexSpecError(name, "name", f"must be 1 to {MAX_IDENTIFIER_BYTES} bytes long")
    if not spec.table or spec.table.count(".") > 1 or "" in spec.table.split("."):
        raise IndexSpecError(name, "table", f"{spec.table!r} is not 'table' or 'schema.table'")
    if not spec.columns:
        raise IndexSpecError(name, "columns", "needs at least one column")
    if len(set(spec.columns)) != len(spec.columns):
        raise IndexSpecError(name, "columns", f"lists a column twice: {list(spec.columns)}")


def _resolve_table(conn: psycopg.Connection, spec: IndexSpec) -> tuple[int, str, str]:
    text = table_identifier(spec.table).as_string(conn)
    row = conn.execute(
        "SELECT c.oid, n.nspname, c.relname, c.relkind FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)",
        (text,),
    ).fetchone()
    if row is None:
        raise IndexSpecError(spec.name, "table", f"table {spec.table!r} does not exist")
    oid, schema, table, kind = int(row[0]), str(row[1]), str(row[2]), str(row[3])
    if kind not in _INDEXABLE_KINDS:
        what = "a partitioned table" if kind == "p" else f"not a table (relkind {kind!r})"
        raise IndexSpecError(
            spec.name, "table", f"{schema}.{table} is {what}; CREATE INDEX CONCURRENTLY cannot build on it"
        )
    return oid, schema, table


def _check_columns(conn: psycopg.Connection, spec: IndexSpec, table_oid: int, qualified: str) -> None:
    rows = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped"
        " ORDER BY attnum",
        (table_oid,),
    ).fetchall()
    present = [str(r[0]) for r in rows]
    missing = [c for c in spec.columns if c not in present]
    if missing:
        raise IndexSpecError(
            spec.name,
            "columns",
            f"{', '.join(repr(c) for c in missing)} not in table {qualified} (columns: {', '.join(present)})",
        )


def _check_method(conn: psycopg.Connection, spec: IndexSpec) -> None:
    if spec.using is None and not spec.unique:
        return
    row = conn.execute(
        "SELECT pg_indexam_has_property(oid, 'can_unique') FROM pg_am WHERE amname = %s AND amtype = 'i'",
        (spec.using or "btree",),
    ).fetchone()
    if row is None:
        methods = [str(r[0]) for r in conn.execute("SELECT amname FROM pg_am WHERE amtype = 'i'")]
        raise IndexSpecError(
            spec.name, "using", f"unknown index method {spec.using!r} (known: {', '.join(methods)})"
        )
    if spec.unique and not row[0]:
        raise IndexSpecError(spec.name, "unique", f"index method {spec.using!r} cannot enforce uniqueness")


_SIGNATURE_SQL = """
SELECT i.indisunique, am.amname,
       ARRAY(SELECT pg_get_indexdef(i.indexrelid, k, true) FROM generate_series(1, i.indnatts) k) AS cols,
       i.indclass::oid[] AS opclasses, i.indcollation::oid[] AS collations, i.indoption::int2[] AS options,
       pg_get_expr(i.indpred, i.indrelid, true) AS predicate, i.indexprs IS NOT NULL AS has_exprs,
       pg_get_indexdef(i.indexrelid) AS definition
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
 WHERE i.indexrelid = %s
"""


def index_signature(conn: psycopg.Connection, index_oid: int) -> IndexSignature:
    """Read the normalised definition of the index ``index_oid``."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_SIGNATURE_SQL, (index_oid,)).fetchone()
    if row is None:
        raise LookupError(f"index oid {index_oid} vanished while being read")
    return IndexSignature(
        unique=bool(row["indisunique"]),
        method=str(row["amname"]),
        columns=tuple(row["cols"]),
        opclasses=tuple(row["opclasses"]),
        collations=tuple(row["collations"]),
        options=tuple(row["options"]),
        predicate=row["predicate"],
        has_expressions=bool(row["has_exprs"]),
        definition=str(row["definition"]),
    )


def _probe(
    conn: psycopg.Connection, spec: IndexSpec, schema: str, table: str, predicate: str | None
) -> IndexSignature:
    """Create the index on an empty temporary copy of the table, read its signature, roll everything back."""
    tag = uuid.uuid4().hex[:12]
    tmp_table, tmp_index = f"expand_probe_{tag}", ""
    signature: IndexSignature | None = None
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(
                sql.SQL("CREATE TEMP TABLE {} (LIKE {})").format(
                    sql.Identifier(tmp_table), sql.Identifier(schema, table)
                )
            )
            # First without the predicate, so an error there is about the method or the columns.
            for part, pred in (("using", None), ("where", predicate)):
                if part == "where" and pred is None:
                    continue
                tmp_index = f"expand_probe_{tag}_{part}"
                try:
                    with conn.transaction():
                        conn.execute(
                            _create_sql(
                                spec,
                                sql.Identifier(tmp_index),
                                sql.Identifier(tmp_table),
                                pred,
                                concurrently=False,
                            )
                        )
                except psycopg.errors.LockNotAvailable:
                    raise
                except psycopg.Error as exc:
                    what = "columns" if part == "using" and not spec.using else part
                    raise IndexSpecError(spec.name, what, f"PostgreSQL refuses it: {exc}") from exc
            oid = conn.execute("SELECT to_regclass(%s)::oid", (sql.Identifier(tmp_index).as_string(conn),))
            row = oid.fetchone()
            assert row is not None and row[0] is not None
            signature = index_signature(conn, int(row[0]))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise IndexSpecError(
            spec.name, "table", f"cannot check the index on {schema}.{table}: {exc}"
        ) from exc
    assert signature is not None
    return signature


def resolve_index(conn: psycopg.Connection, spec: IndexSpec) -> ResolvedIndex:
    """Check ``spec`` against the catalog (and PostgreSQL's own rules) without changing anything.

    ``conn`` must be in autocommit mode; a ``lock_timeout`` set on it bounds the brief table lock the
    probe takes (SQLSTATE 55P03 is raised for the caller to retry).
    """
    _check_shape(spec)
    predicate = normalize_predicate(spec.name, spec.where) if spec.where is not None else None
    oid, schema, table = _resolve_table(conn, spec)
    _check_columns(conn, spec, oid, f"{schema}.{table}")
    _check_method(conn, spec)
    find_index(conn, schema, spec.name)  # raises when the name is taken by a table, view, sequence...
    expected = _probe(conn, spec, schema, table, predicate)
    return ResolvedIndex(spec, schema, table, oid, predicate, expected)


def find_index(conn: psycopg.Connection, schema: str, name: str) -> ExistingIndex | None:
    """The index called ``schema.name``, or None; a non-index relation of that name is an error."""
    row = conn.execute(
        "SELECT c.oid, c.relkind, i.indrelid, i.indisvalid, i.indisready FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_index i ON i.indexrelid = c.oid"
        " WHERE n.nspname = %s AND c.relname = %s",
        (schema, name),
    ).fetchone()
    if row is None:
        return None
    if row[1] not in ("i", "I"):
        raise IndexSpecError(name, "name", f"{schema}.{name} exists and is not an index (relkind {row[1]!r})")
    return ExistingIndex(
        oid=int(row[0]),
        table_oid=int(row[2]),
        valid=bool(row[3]),
        ready=bool(row[4]),
        signature=index_signature(conn, int(row[0])),
    )
