"""Every key a production table has, on a real PostgreSQL: composite primary keys (walked as rows), text,
uuid and timestamp keys, a table with no primary key but a unique NOT NULL column; resuming a composite or
text key from its checkpoint; partitions of uuid and composite keys; the sweep's cap on stalled rounds."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import logging
import threading
import time

import psycopg
import pytest

from airflow_provider_expand.engine.backfill import run as backfill_run
from airflow_provider_expand.engine.backfill.run import (
    BackfillResult,
    BackfillRowError,
    BackfillSpec,
    run_backfill,
)
from airflow_provider_expand.engine.backfill.walk import BackfillWalk
from airflow_provider_expand.engine.database import Connector
from airflow_provider_expand.engine.ledger.store import Ledger

LOG = logging.getLogger("test.backfill")
SPEC = BackfillSpec(
    table="items",
    set="name = title, hits = hits + 1",
    where="name IS NULL AND title IS NOT NULL",
    batch_size=300,
    target_batch_time=None,
    pause=dt.timedelta(0),
)
ROWS = 3_000
# (case, the key columns' DDL, those columns, their values from g = 1..ROWS, the key the engine must choose)
KEYS: list[tuple[str, str, str, str, str]] = [
    ("composite", "shop int, n int, PRIMARY KEY (shop, n)", "shop, n", "g % 7, g", "shop, n"),
    ("text", "code text PRIMARY KEY", "code", "'sku-' || md5(g::text)", "code"),
    ("uuid", "id uuid PRIMARY KEY", "id", "md5(g::text)::uuid", "id"),
    (
        "timestamp",
        "at timestamptz PRIMARY KEY",
        "at",
        "timestamptz '2024-01-01 00:00:00.123456+00' + g * interval '1 minute 0.5 second'",
        "at",
    ),
    (
        "no primary key, unique NOT NULL column",
        "ref bigint UNIQUE, code text NOT NULL UNIQUE",
        "ref, code",
        "CASE WHEN g % 3 = 0 THEN NULL ELSE g END, 'c' || g",
        "code",
    ),
]
COMPOSITE = KEYS[0][1:4]
TEXT = KEYS[1][1:4]


def _count(conn: psycopg.Connection, query: str, *params: object) -> int:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def _items(conn: psycopg.Connection, key_ddl: str, columns: str, values: str) -> int:
    """``ROWS`` rows, every 50th without a title (left alone); returns how many the backfill must do."""
    conn.execute(f"CREATE TABLE items ({key_ddl}, title text, name text, hits int NOT NULL DEFAULT 0)")
    conn.execute(
        f"INSERT INTO items ({columns}, title) SELECT {values},"
        f" CASE WHEN g % 50 = 0 THEN NULL ELSE 'title ' || g END FROM generate_series(1, {ROWS}) g"
    )
    conn.execute("ANALYZE items")
    return ROWS - ROWS // 50


def _assert_done_once(conn: psycopg.Connection, table: str = "items") -> None:
    """Every row with a title named exactly once; the others untouched."""
    assert (
        _count(conn, f"SELECT count(*) FROM {table} WHERE title IS NOT NULL AND (name <> title OR hits <> 1)")
        == 0
    )
    assert (
        _count(conn, f"SELECT count(*) FROM {table} WHERE title IS NULL AND (name IS NOT NULL OR hits <> 0)")
        == 0
    )


def _release_when_done(dsn: str, blocker: psycopg.Connection, rows_done: int) -> None:
    """End ``blocker``'s transaction once the ledger shows ``rows_done`` (or after 60 s)."""
    with psycopg.connect(dsn, autocommit=True) as watcher:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if _count(watcher, "SELECT (to_regclass('airflow_expand.steps') IS NOT NULL)::int"):
                step = Ledger().step(watcher, "m", "backfill:items")
                if step is not None and step.rows_done >= rows_done:
                    break
            time.sleep(0.01)
    blocker.rollback()


@pytest.mark.parametrize(("case", "key_ddl", "columns", "values", "chosen"), KEYS, ids=[k[0] for k in KEYS])
def test_each_key_type_is_walked_in_order_to_completion(
    pg_conn: psycopg.Connection,
    pg_connect: Connector,
    case: str,
    key_ddl: str,
    columns: str,
    values: str,
    chosen: str,
) -> None:
    to_do = _items(pg_conn, key_ddl, columns, values)
    # The application holds three rows until the walk has done all the others: the sweep must catch them.
    with psycopg.connect(pg_conn.info.dsn) as blocker:
        blocker.execute("SELECT 1 FROM items WHERE title IS NOT NULL ORDER BY title LIMIT 3 FOR UPDATE")
        releaser = threading.Thread(target=_release_when_done, args=(pg_conn.info.dsn, blocker, to_do - 3))
        releaser.start()
        try:
            result = run_backfill(pg_connect, SPEC, migration_id="m", log=LOG)
        finally:
            releaser.join()
    assert result.key == chosen
    assert result.rows_done == to_do and result.rows_swept == 3, result
    _assert_done_once(pg_conn)
    step = Ledger().step(pg_conn, "m", "backfill:items")
    assert step is not None and step.status == "success" and step.rows_done == to_do
    # The checkpoint is the table's last key in key order, stored in its text form (a JSON array if composite).
    key = chosen.split(", ")
    last = pg_conn.execute(
        f"SELECT {', '.join(f'{c}::text' for c in key)} FROM items"
        f" ORDER BY {', '.join(f'items.{c} DESC' for c in key)} LIMIT 1"
    ).fetchone()
    assert last is not None
    expected = last[0] if len(key) == 1 else json.dumps(list(last))
    assert step.last_key == expected == result.last_key


@pytest.mark.parametrize(
    ("table", "failing"),
    [(COMPOSITE, "shop = 3 AND n = 1333"), (TEXT, "code = 'sku-' || md5('1333')")],
    ids=["composite", "text"],
)
def test_resume_from_a_composite_or_text_checkpoint_after_a_failing_row(
    pg_conn: psycopg.Connection, pg_connect: Connector, table: tuple[str, str, str], failing: str
) -> None:
    """``set`` raises on one row: the error names its key, the rows before it stay committed with a
    checkpoint in the key's own form, and after the row is fixed the next run resumes right there."""
    key_ddl = table[0]
    to_do = _items(pg_conn, *table)
    pg_conn.execute(f"UPDATE items SET title = 'bad' WHERE {failing}")
    spec = dataclasses.replace(
        SPEC,
        set="name = CASE WHEN title = 'bad' THEN (1 / (hits - hits))::text ELSE title END, hits = hits + 1",
    )
    with pytest.raises(BackfillRowError, match=r"with key .*division by zero") as caught:
        run_backfill(pg_connect, spec, migration_id="m", log=LOG)
    step = Ledger().step(pg_conn, "m", "backfill:items")
    assert step is not None and step.status == "failed" and step.last_key is not None
    assert caught.value.key in (step.error or "")
    # Rows up to the checkpoint are done, none after it, and rows_done counts them exactly.
    key = "(shop, n)" if "shop" in key_ddl else "code"
    stored = json.loads(step.last_key) if "shop" in key_ddl else [step.last_key]
    marks = ", ".join(["%s"] * len(stored))
    assert (
        _count(
            pg_conn,
            f"SELECT count(*) FROM items WHERE {key} <= ({marks}) AND name IS NULL AND title IS NOT NULL",
            *stored,
        )
        == 0
    )
    assert (
        _count(pg_conn, f"SELECT count(*) FROM items WHERE {key} > ({marks}) AND name IS NOT NULL", *stored)
        == 0
    )
    assert _count(pg_conn, "SELECT count(*) FROM items WHERE name IS NOT NULL") == step.rows_done > 0
    assert _count(pg_conn, f"SELECT count(*) FROM items WHERE {failing} AND name IS NULL") == 1

    pg_conn.execute(f"UPDATE items SET title = 'fixed' WHERE {failing}")
    result = run_backfill(pg_connect, spec, migration_id="m", log=LOG)
    assert result.resumed_from == step.last_key
    assert result.rows_this_run == to_do - step.rows_done and result.rows_done == to_do
    _assert_done_once(pg_conn)


def _run_partitions(connect: Connector, spec: BackfillSpec) -> list[BackfillResult]:
    results: dict[int, BackfillResult] = {}
    errors: list[BaseException] = []

    def one(part: int) -> None:
        try:
            results[part] = run_backfill(connect, spec, migration_id="m", partition=part, log=LOG)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(p,)) for p in range(spec.partitions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return [results[p] for p in range(spec.partitions)]


def test_partitions_of_uuid_and_composite_keys_cover_the_key_space_exactly_once(
    pg_conn: psycopg.Connection, pg_connect: Connector
) -> None:
    to_do = _items(pg_conn, *KEYS[2][1:4])
    results = _run_partitions(pg_connect, dataclasses.replace(SPEC, partitions=3))
    assert sum(r.rows_done for r in results) == to_do
    assert all(r.rows_done > to_do // 6 for r in results), [r.rows_done for r in results]
    _assert_done_once(pg_conn)
    bounds = pg_conn.execute(
        "SELECT lower_key, upper_key FROM airflow_expand.backfill_ranges ORDER BY part"
    ).fetchall()
    assert bounds[0][0] is None and bounds[-1][1] is None
    assert [b[1] for b in bounds[:-1]] == [b[0] for b in bounds[1:]]

    # A partitioned table with a composite primary key (rows matched by tableoid and ctid, not ctid alone).
    pg_conn.execute(
        """
        CREATE TABLE orders (shop int, n int, title text, name text, hits int NOT NULL DEFAULT 0,
                             PRIMARY KEY (shop, n)) PARTITION BY LIST (shop);
        CREATE TABLE orders_a PARTITION OF orders FOR VALUES IN (0, 1, 2);
        CREATE TABLE orders_b PARTITION OF orders DEFAULT;
        INSERT INTO orders (shop, n, title) SELECT g % 5, g, 'title ' || g FROM generate_series(1, 2000) g;
        """
    )
    orders = dataclasses.replace(SPEC, table="orders", partitions=2)
    results = _run_partitions(pg_connect, orders)
    assert sum(r.rows_done for r in results) == 2000
    _assert_done_once(pg_conn, "orders")
    stored = pg_conn.execute(
        "SELECT upper_key FROM airflow_expand.backfill_ranges WHERE step = 'backfill:orders' AND part = 0"
    ).fetchone()
    assert stored is not None and len(json.loads(stored[0])) == 2


def test_the_sweep_cap_counts_only_rounds_without_progress(
    pg_conn: psycopg.Connection, pg_connect: Connector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five rows held by the application, released one per sweep wait: six rounds and more, of which only
    one finds no fewer rows than before, so a cap of two stalled rounds lets the sweep finish."""
    to_do = _items(pg_conn, "code text PRIMARY KEY", "code", "'c' || g")
    sessions = []
    for code in (101, 201, 301, 401, 501):
        session = psycopg.connect(pg_conn.info.dsn)
        session.execute("SELECT 1 FROM items WHERE code = %s FOR UPDATE", (f"c{code}",))
        sessions.append(session)
    waits: list[float] = []

    def release_one(seconds: float) -> None:  # the sweep's wait for locked rows: one lock goes meanwhile
        waits.append(seconds)
        if sessions:
            session = sessions.pop(0)
            session.rollback()  # answered once the lock is gone (a close() lets the server release it later)
            session.close()

    monkeypatch.setattr(backfill_run, "BackfillWalk", functools.partial(BackfillWalk, sleep=release_one))
    try:
        result = run_backfill(
            pg_connect, dataclasses.replace(SPEC, max_sweep_rounds=2), migration_id="m", log=LOG
        )
    finally:
        for session in sessions:
            session.close()
    assert result.rows_done == to_do and result.rows_swept == 5
    assert len(waits) >= 5, waits  # a round per released row, more than the cap of two
    _assert_done_once(pg_conn)
