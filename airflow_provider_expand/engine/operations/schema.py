"""The schema model: one PostgreSQL schema's tables read once from the catalog, which the operations of one
migration update in order, so the second operation sees what the first one changed (pgroll's schema.Schema).

Every object keeps two names: ``name`` is how the new code sees it (the versioned schema's views), and
``physical`` is the real name in the database until the contract. A column added by this provider gets its
final name at once (old code writes through the tables and never names it), so ``physical == name`` for it;
a renamed column or table keeps its old ``physical`` until the contract renames it.

The model serialises to JSON (``to_dict``/``from_dict``): the expand stores the snapshot it planned from,
so the contract and the rollback plan from the same schema after expand has changed the catalog.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row

VERSION_SCHEMA_COMMENT = "airflow-expand version schema"  # COMMENT ON SCHEMA of every version schema
ConstraintType = Literal[
    "p", "u", "c", "f", "x"
]  # pg_constraint.contype: primary, unique, check, fk, exclude


@dataclass
class Column:
    name: str
    physical: str
    type: str  # format_type(atttypid, atttypmod): ``integer``, ``character varying(255)``, ...
    nullable: bool = True
    default: str | None = None  # pg_get_expr(adbin): the default as PostgreSQL prints it
    comment: str | None = None
    identity: str = ""  # attidentity: '' none, 'a' ALWAYS, 'd' BY DEFAULT
    generated: bool = False  # a STORED generated column (it cannot be written to)


@dataclass
class Constraint:
    name: str
    type: ConstraintType
    columns: tuple[str, ...]  # physical column names (empty for a CHECK on an expression)
    definition: str  # pg_get_constraintdef
    validated: bool = True


@dataclass
class Index:
    name: str
    columns: tuple[str, ...]  # physical column names; '' for an expression element
    unique: bool
    definition: str  # pg_get_indexdef
    valid: bool = True
    primary: bool = False
    constraint: str | None = None  # the constraint this index backs (primary key, unique, exclude)


@dataclass
class Table:
    name: str
    physical: str
    columns: dict[str, Column] = field(default_factory=dict)  # by logical name, in attnum order
    constraints: dict[str, Constraint] = field(default_factory=dict)
    indexes: dict[str, Index] = field(default_factory=dict)
    comment: str | None = None
    replica_identity: str = "d"  # relreplident: d default, n nothing, f full, i index
    created: bool = False  # created by this migration (empty during the soak: no backfill needed)

    def column(self, name: str) -> Column | None:
        return self.columns.get(name)

    def physical_column(self, physical: str) -> Column | None:
        return next((c for c in self.columns.values() if c.physical == physical), None)

    def add_column(self, column: Column) -> None:
        self.columns[column.name] = column

    def drop_column(self, name: str) -> Column:
        return self.columns.pop(name)

    def rename_column(self, old: str, new: str) -> None:
        """Rename in the new version only: the physical name stays until the contract."""
        self.columns = {(new if k == old else k): c for k, c in self.columns.items()}
        self.columns[new].name = new

    @property
    def primary_key(self) -> tuple[str, ...]:
        """The primary key's physical columns (empty when the table has none)."""
        pk = next((c for c in self.constraints.values() if c.type == "p"), None)
        return pk.columns if pk else ()

    def logical(self, physical: str) -> str | None:
        column = self.physical_column(physical)
        return column.name if column else None


@dataclass
class Schema:
    """The tables of one PostgreSQL schema (``public`` by default) by their new-version names."""

    name: str = "public"
    tables: dict[str, Table] = field(default_factory=dict)
    schemas: tuple[str, ...] = ()  # every schema of the database (a version schema must not take one)
    version_schemas: tuple[str, ...] = ()  # the version schemas of earlier migrations over this schema

    def table(self, name: str) -> Table | None:
        return self.tables.get(name)

    def physical_table(self, physical: str) -> Table | None:
        return next((t for t in self.tables.values() if t.physical == physical), None)

    def add_table(self, table: Table) -> None:
        self.tables[table.name] = table

    def drop_table(self, name: str) -> Table:
        return self.tables.pop(name)

    def rename_table(self, old: str, new: str) -> None:
        self.tables = {(new if k == old else k): t for k, t in self.tables.items()}
        self.tables[new].name = new

    def index(self, name: str) -> tuple[Table, Index] | None:
        """The index ``name`` (index names are unique per schema) and its table."""
        for table in self.tables.values():
            if name in table.indexes:
                return table, table.indexes[name]
        return None

    def relation_names(self) -> set[str]:
        """Every name taken in the schema's relation namespace (tables, indexes) as the catalog holds it."""
        names = {t.physical for t in self.tables.values()} | {t.name for t in self.tables.values()}
        for table in self.tables.values():
            names |= set(table.indexes)
        return names

    def copy(self) -> Schema:
        return copy.deepcopy(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schema:
        tables = {}
        for key, raw in data["tables"].items():
            raw = dict(raw)
            raw["columns"] = {k: Column(**c) for k, c in raw["columns"].items()}
            raw["constraints"] = {
                k: Constraint(**{**c, "columns": tuple(c["columns"])}) for k, c in raw["constraints"].items()
            }
            raw["indexes"] = {
                k: Index(**{**i, "columns": tuple(i["columns"])}) for k, i in raw["indexes"].items()
            }
            tables[key] = Table(**raw)
        return cls(
            name=data["name"],
            tables=tables,
            schemas=tuple(data.get("schemas", ())),
            version_schemas=tuple(data.get("version_schemas", ())),
        )


_TABLES = """
SELECT c.oid, c.relname, obj_description(c.oid, 'pg_class') AS comment, c.relreplident::text AS replident
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relkind IN ('r', 'p')
ORDER BY c.relname
"""
_COLUMNS = """
SELECT a.attrelid AS oid, a.attname, format_type(a.atttypid, a.atttypmod) AS type, NOT a.attnotnull AS nullable,
       pg_get_expr(d.adbin, d.adrelid) AS "default", col_description(a.attrelid, a.attnum) AS comment,
       a.attidentity::text AS identity, a.attgenerated <> '' AS generated
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.attgenerated = ''
WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""
_CONSTRAINTS = """
SELECT k.conrelid AS oid, k.conname, k.contype::text AS type, k.convalidated AS validated,
       pg_get_constraintdef(k.oid) AS definition,
       coalesce((SELECT array_agg(a.attname ORDER BY u.ord) FROM unnest(k.conkey) WITH ORDINALITY u(n, ord)
                 JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n), '{}') AS columns
FROM pg_constraint k JOIN pg_namespace n ON n.oid = k.connamespace
WHERE n.nspname = %s AND k.conrelid <> 0
  AND k.contype IN ('p', 'u', 'c', 'f', 'x')  -- 18 catalogs NOT NULL too ('n'): the columns model it
ORDER BY k.conrelid, k.conname
"""
_INDEXES = """
SELECT i.indrelid AS oid, c.relname, i.indisunique AS unique, i.indisprimary AS primary, i.indisvalid AS valid,
       pg_get_indexdef(i.indexrelid) AS definition, k.conname AS constraint,
       (SELECT array_agg(coalesce(a.attname, '') ORDER BY u.ord) FROM unnest(i.indkey) WITH ORDINALITY u(n, ord)
        LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = u.n) AS columns
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_constraint k ON k.conindid = i.indexrelid AND k.contype IN ('p', 'u', 'x')
WHERE n.nspname = %s
ORDER BY i.indrelid, c.relname
"""


def read_schema(conn: psycopg.Connection, name: str = "public") -> Schema:
    """The model of schema ``name`` as the catalog has it now (four queries, one snapshot of the catalog)."""
    with conn.cursor(row_factory=dict_row) as cur:
        by_oid: dict[int, Table] = {}
        for row in cur.execute(_TABLES, (name,)).fetchall():
            by_oid[row["oid"]] = Table(
                name=row["relname"],
                physical=row["relname"],
                comment=row["comment"],
                replica_identity=row["replident"],
            )
        for row in cur.execute(_COLUMNS, (name,)).fetchall():
            table = by_oid.get(row["oid"])
            if table is not None:
                table.add_column(
                    Column(
                        name=row["attname"],
                        physical=row["attname"],
                        type=row["type"],
                        nullable=row["nullable"],
                        default=row["default"],
                        comment=row["comment"],
                        identity=row["identity"],
                        generated=row["generated"],
                    )
                )
        for row in cur.execute(_CONSTRAINTS, (name,)).fetchall():
            table = by_oid.get(row["oid"])
            if table is not None:
                table.constraints[row["conname"]] = Constraint(
                    name=row["conname"],
                    type=row["type"],
                    columns=tuple(row["columns"]),
                    definition=row["definition"],
                    validated=row["validated"],
                )
        for row in cur.execute(_INDEXES, (name,)).fetchall():
            table = by_oid.get(row["oid"])
            if table is not None:
                table.indexes[row["relname"]] = Index(
                    name=row["relname"],
                    columns=tuple(row["columns"] or ()),
                    unique=row["unique"],
                    definition=row["definition"],
                    valid=row["valid"],
                    primary=row["primary"],
                    constraint=row["constraint"],
                )
        rows = cur.execute(
            "SELECT nspname, obj_description(oid, 'pg_namespace') AS comment FROM pg_namespace ORDER BY 1"
        ).fetchall()
    versions = tuple(
        r["nspname"]
        for r in rows
        if (r["comment"] or "").startswith(VERSION_SCHEMA_COMMENT)
        and (r["comment"] or "").endswith(f" over {name}")
    )
    return Schema(
        name=name,
        tables={t.name: t for t in by_oid.values()},
        schemas=tuple(r["nspname"] for r in rows),
        version_schemas=versions,
    )
