"""The key a backfill walks: which columns, and how a key's value is written and shown.

The default is the primary key, whatever its columns and types (integer, text, uuid, timestamp, ...); a
table without one is walked by its narrowest unique index on NOT NULL columns, as pgroll chooses its
identity columns. A value travels as the text form of each column (``column::text``), bound as text into
row comparisons where the column's type reads it back, so no type name is ever pasted into SQL.
"""

from __future__ import annotations

import psycopg

from airflow_provider_expand.engine.backfill.errors import BackfillInputError

Key = tuple[str, ...]
"""A key's value: the text form of each key column, in key order (what ``column::text`` gives)."""

# The session settings under which a key's text form reads back as the same value (timestamps, floats),
# whatever the role's or database's defaults say.
KEY_TEXT_SETTINGS = {"datestyle": "ISO, YMD", "intervalstyle": "postgres", "extra_float_digits": "1"}


def key_text_settings(conn: psycopg.Connection) -> None:
    """Pin :data:`KEY_TEXT_SETTINGS` for the session that reads and writes key values."""
    for name, value in KEY_TEXT_SETTINGS.items():
        conn.execute("SELECT set_config(%s, %s, false)", (name, value))


def show_key(key: Key) -> str:
    """A key for messages and logs: ``42``, or ``(3, abc)`` for a composite key."""
    return key[0] if len(key) == 1 else f"({', '.join(key)})"


# Every index that can order a walk: valid, unique, btree, on plain columns, no predicate; per index its key
# columns in order, whether all are NOT NULL, and whether each sorts as the column does (default operator
# class, the column's collation), so that ``ORDER BY`` and ``>`` on the key can use it.
_WALKABLE_INDEXES = """
SELECT ic.relname::text, i.indisprimary, array_agg(a.attname::text ORDER BY k.ord),
       bool_and(a.attnotnull), bool_and(oc.opcdefault AND k.coll = a.attcollation)
  FROM pg_index i
  JOIN pg_class ic ON ic.oid = i.indexrelid
  JOIN pg_am am ON am.oid = ic.relam
 CROSS JOIN LATERAL unnest(i.indkey::int2[], i.indclass::oid[], i.indcollation::oid[])
       WITH ORDINALITY AS k(attnum, opclass, coll, ord)
  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
  JOIN pg_opclass oc ON oc.oid = k.opclass
 WHERE i.indrelid = %s AND i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL
   AND am.amname = 'btree' AND k.ord <= i.indnkeyatts
 GROUP BY ic.relname, i.indisprimary, i.indexrelid
 ORDER BY NOT i.indisprimary, count(*), ic.relname
"""


def key_columns(conn: psycopg.Connection, oid: int, label: str, key: str | tuple[str, ...] | None) -> Key:
    """The key to walk: the primary key by default, else the narrowest unique index on NOT NULL columns.

    A named key must be NOT NULL columns with a valid unique btree index on exactly them, in that order.
    """
    indexes = [
        (str(name), bool(primary), tuple(cols), bool(notnull), bool(sorts))
        for name, primary, cols, notnull, sorts in conn.execute(_WALKABLE_INDEXES, (oid,)).fetchall()
    ]
    if key is None:
        usable = [i for i in indexes if (i[1] or i[3]) and i[4]]
        if not usable:
            raise BackfillInputError(
                "key",
                f"table {label} has no primary key and no unique index on NOT NULL columns to walk it by: "
                "add a primary key (or a unique index on NOT NULL columns), or name such columns as key",
            )
        return usable[0][2]
    columns = (key,) if isinstance(key, str) else tuple(key)
    if not columns or len(set(columns)) != len(columns):
        raise BackfillInputError("key", f"{list(columns)!r} must name distinct columns")
    for column in columns:
        row = conn.execute(
            "SELECT a.attnotnull FROM pg_attribute a"
            " WHERE a.attrelid = %s AND a.attname = %s AND a.attnum > 0 AND NOT a.attisdropped",
            (oid, column),
        ).fetchone()
        if row is None:
            raise BackfillInputError("key", f"column {column!r} does not exist in table {label}")
        if not row[0]:
            raise BackfillInputError(
                "key", f"column {column!r} of {label} is nullable; the key must be NOT NULL"
            )
    matching = [i for i in indexes if i[2] == columns]
    if not any(i[4] for i in matching):
        why = (
            f"index {matching[0][0]} sorts by another operator class or collation than the column"
            if matching
            else "there is none"
        )
        raise BackfillInputError(
            "key",
            f"column(s) {', '.join(columns)} of {label} need a valid unique btree index on exactly "
            f"({', '.join(columns)}) (each batch walks it in order): {why}",
        )
    return columns
