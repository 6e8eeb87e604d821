"""The SQL of one backfill window and of one sweep fix, for a key of any number of columns.

A window is a row comparison on the key (``(a, b) > (%(lower_0)s, %(lower_1)s)``) that ends at the
``n``-th key (an ``OFFSET`` on the key's index); its rows that match ``where`` are updated by one
statement, which returns what the walk checkpoints. It comes in two forms: the plain ``UPDATE`` of the
window (the fast one, run under a short ``lock_timeout``), and the one that first locks the window's rows
``FOR NO KEY UPDATE SKIP LOCKED`` and updates what it could lock (for a window where the application
holds a row: it never waits, and the sweep gets the skipped rows later). Locking first costs about 30%
more per row (a second visit of each row and one more WAL record; docs/benchmarks.md), so it is the
fallback, not the rule. Composed with ``psycopg.sql`` only: identifiers quoted, values bound.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from airflow_provider_expand.engine.backfill.key import Key
from airflow_provider_expand.engine.backfill.plan import Target


def _row_refs(target: Target) -> tuple[sql.Composable, sql.Composable]:
    """How a batch names its locked rows and how the UPDATE finds them again: by ``ctid`` in a plain table
    (a TID scan); in a partitioned or inherited one, where a ctid repeats across heaps, by
    ``(tableoid, ctid)``, which the UPDATE checks within the batch's own key window (an index range)."""
    if target.by_ctid:
        return sql.SQL("ctid AS row_ref"), sql.SQL("ctid = ANY(ARRAY(SELECT row_ref FROM _expand_batch))")
    return (
        sql.SQL("tableoid AS part_ref, ctid AS row_ref"),
        sql.SQL("(tableoid, ctid) IN (SELECT part_ref, row_ref FROM _expand_batch)"),
    )


def batch_sql(target: Target, has_lower: bool, *, skip_locked: bool) -> sql.Composed:
    """One batch: the window ends at the ``n``-th key (or at ``upper``); update its matching rows (with
    ``skip_locked``, those it can lock without waiting). Returns (the n-th key's text forms, or NULL for the
    range's last window; rows updated; a key that still matches ``where`` after the update, or NULL)."""
    k, t = target.row(), target.table
    lower = sql.SQL("{} > {}").format(k, target.placeholders("lower")) if has_lower else sql.SQL("true")
    upto = sql.SQL("({})").format(
        sql.SQL(", ").join(
            sql.SQL("coalesce((SELECT {} FROM _expand_bound), {})").format(
                sql.Identifier(f"_k{i}"), sql.Placeholder(f"upper_{i}")
            )
            for i in range(len(target.columns))
        )
    )
    window = sql.SQL("{lower} AND {k} <= {upto}").format(lower=lower, k=k, upto=upto)
    locked: sql.Composable = sql.SQL("")
    match_ref: sql.Composable = sql.SQL("{} AND ({})").format(window, target.where_sql)
    if skip_locked:
        select_ref, match_ref = _row_refs(target)
        if not target.by_ctid:
            match_ref = sql.SQL("{} AND {}").format(window, match_ref)
        locked = sql.SQL(
            ", _expand_batch AS ("
            " SELECT {select_ref} FROM {t} WHERE {window} AND ({w}) FOR NO KEY UPDATE SKIP LOCKED)"
        ).format(select_ref=select_ref, t=t, window=window, w=target.where_sql)
    return sql.SQL(
        "WITH _expand_bound AS ("
        " SELECT {aliased} FROM {t} WHERE {lower} AND {k} <= {upper} ORDER BY {order} OFFSET %(skip)s LIMIT 1"
        "){locked}, _expand_done AS ("
        " UPDATE {t} SET {set} WHERE {match_ref}"
        " RETURNING CASE WHEN coalesce(({w}), false) THEN ARRAY[{texts}] END AS unfinished"
        ") SELECT (SELECT ARRAY[{bound_texts}] FROM _expand_bound), count(*), min(unfinished) FROM _expand_done"
    ).format(
        aliased=target.aliased(),
        t=t,
        lower=lower,
        k=k,
        upper=target.placeholders("upper"),
        order=target.order(),
        locked=locked,
        w=target.where_sql,
        set=target.set_sql,
        match_ref=match_ref,
        texts=target.texts(),
        bound_texts=target.texts("_expand_bound"),
    )


def fix_sql(target: Target, keys: int) -> sql.Composed:
    """The sweep's fix: the given keys (``k0``, ``k1``, ... bound with ``Target.bind``), if they still
    match and are not locked."""
    k, t = target.row(), target.table
    select_ref, match_ref = _row_refs(target)
    listed = sql.SQL("{} IN ({})").format(
        k, sql.SQL(", ").join(target.placeholders(f"k{i}") for i in range(keys))
    )
    if not target.by_ctid:
        match_ref = sql.SQL("{} AND {}").format(listed, match_ref)
    return sql.SQL(
        "WITH _expand_batch AS ("
        " SELECT {select_ref} FROM {t} WHERE {listed} AND ({w}) FOR NO KEY UPDATE SKIP LOCKED"
        "), _expand_done AS ("
        " UPDATE {t} SET {set} WHERE {match_ref}"
        " RETURNING CASE WHEN coalesce(({w}), false) THEN ARRAY[{texts}] END AS unfinished"
        ") SELECT count(*), min(unfinished) FROM _expand_done"
    ).format(
        select_ref=select_ref,
        t=t,
        listed=listed,
        w=target.where_sql,
        set=target.set_sql,
        match_ref=match_ref,
        texts=target.texts(),
    )


def read_key(row: Any) -> Key | None:
    """A key read back as an array of text forms (None stays None)."""
    return tuple(str(v) for v in row) if row is not None else None
