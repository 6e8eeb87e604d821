"""The batched backfill against a real PostgreSQL, with the application writing beside it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import random
import re
import threading
import time

import psycopg
import pytest

from airflow_provider_expand.engine.backfill.run import (
    BackfillResult,
    BackfillSpec,
    BackfillSweepError,
    run_backfill,
)
from airflow_provider_expand.engine.database import Connector
from airflow_provider_expand.engine.ledger.store import Ledger

LOG = logging.getLogger("test.backfill")
SPEC = BackfillSpec(
    table="products",
    set="name = title",
    where="name IS NULL AND title IS NOT NULL",
    batch_size=2_000,
    target_batch_time=dt.timedelta(milliseconds=40),
    pause=dt.timedelta(0),
)
# The runbook's 'Redenumire Coloană' sync trigger: what the expand phase installs so that every write of
# the application keeps the new column right while the backfill runs.
SYNC_TRIGGER = """
CREATE FUNCTION sync_old_to_new() RETURNS TRIGGER AS $$
BEGIN
  NEW.name := NEW.title;
  RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER trg_sync_column BEFORE INSERT OR UPDATE ON products
  FOR EACH ROW EXECUTE FUNCTION sync_old_to_new();
"""


def _make_products(conn: psycopg.Connection, rows: int, *, step: int = 1) -> None:
    """``rows`` products (keys ``step`` apart); every 50th has no title, so it must stay unnamed."""
    conn.execute(
        "CREATE TABLE products (id bigserial PRIMARY KEY, shop_id int NOT NULL, title text, name text,"
        " hits int NOT NULL DEFAULT 0)"
    )
    conn.execute(
        "INSERT INTO products (id, shop_id, title) SELECT g * %(s)s, g %% 7,"
        " CASE WHEN g %% 50 = 0 THEN NULL ELSE 'title ' || g END FROM generate_series(1, %(n)s) g",
        {"n": rows, "s": step},
    )
    conn.execute("SELECT setval('products_id_seq', %s)", (rows * step,))
    conn.execute("VACUUM ANALYZE products")


def _count(conn: psycopg.Connection, query: str) -> int:
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def _assert_complete(conn: psycopg.Connection) -> None:
    assert _count(conn, "SELECT count(*) FROM products WHERE name IS NULL AND title IS NOT NULL") == 0
    assert _count(conn, "SELECT count(*) FROM products WHERE name IS DISTINCT FROM title") == 0


class Writer(threading.Thread):
    """The application: inserts, updates random rows, and sometimes holds a row lock for a moment."""

    def __init__(self, dsn: str, max_id: int, avoid: range) -> None:
        super().__init__(daemon=True)
        self.dsn, self.max_id, self.avoid = dsn, max_id, avoid
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.counts = {"insert": 0, "update": 0, "lock": 0}
        self.error: BaseException | None = None

    def _timed(self, conn: psycopg.Connection, query: str, params: tuple[object, ...]) -> None:
        started = time.perf_counter()
        conn.execute(query, params)
        self.latencies.append(time.perf_counter() - started)

    def run(self) -> None:
        rng = random.Random(7)
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                while not self.stop.is_set():
                    row_id = rng.randint(1, self.max_id)
                    if row_id in self.avoid:
                        continue
                    kind = rng.choice(("insert", "update", "update", "lock"))
                    if kind == "insert":
                        self._timed(
                            conn, "INSERT INTO products (shop_id, title) VALUES (1, %s)", (f"new {row_id}",)
                        )
                    elif kind == "update":
                        self._timed(
                            conn, "UPDATE products SET title = %s WHERE id = %s", (f"edit {row_id}", row_id)
                        )
                    else:
                        with conn.transaction():
                            self._timed(conn, "SELECT 1 FROM products WHERE id = %s FOR UPDATE", (row_id,))
                            time.sleep(0.01)
                    self.counts[kind] += 1
                    time.sleep(0.002)
        except BaseException as exc:  # reported by the test
            self.error = exc


@pytest.mark.one_pg_version("a writer's latency under the backfill: timing, on a shared 2-core machine")
def test_backfill_with_a_writer_is_complete_and_never_blocks_it_long(
    pg_conn: psycopg.Connection, pg_dsn: str, pg_connect: Connector, caplog: pytest.LogCaptureFixture
) -> None:
    rows = 200_000
    _make_products(pg_conn, rows)
    pg_conn.execute(SYNC_TRIGGER)
    held = range(150_001, 150_011)  # none of them without a title
    writer = Writer(pg_dsn, rows, held)

    # Another session holds ten rows while the backfill passes them, so they must be left to the sweep.
    blocker = psycopg.connect(pg_dsn)
    blocker.execute("SELECT 1 FROM products WHERE id >= %s AND id < %s FOR UPDATE", (held.start, held.stop))
    ledger = Ledger()

    def release_when_passed() -> None:
        with psycopg.connect(pg_dsn, autocommit=True) as watcher:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                step = ledger.step(watcher, "m", "backfill:products") if _has_ledger(watcher) else None
                if step is not None and step.last_key is not None and int(step.last_key) >= held.stop:
                    break
                time.sleep(0.01)
        blocker.rollback()

    releaser = threading.Thread(target=release_when_passed, daemon=True)
    caplog.set_level(logging.INFO, logger=LOG.name)
    writer.start()
    releaser.start()
    time.sleep(0.2)
    try:
        result = run_backfill(
            pg_connect, SPEC, migration_id="m", log=LOG, progress_every=dt.timedelta(milliseconds=250)
        )
    finally:
        writer.stop.set()
        writer.join(10)
        releaser.join(10)
        blocker.close()

    assert writer.error is None, writer.error
    assert min(writer.counts.values()) > 10, writer.counts
    _assert_complete(pg_conn)
    assert max(writer.latencies) < 0.100, f"writer waited {max(writer.latencies) * 1000:.0f} ms"
    assert result.rows_swept >= len(held), result
    assert result.rows_done == result.rows_this_run >= rows * 49 // 50 - 2 * writer.counts["update"]
    step = ledger.step(pg_conn, "m", "backfill:products")
    assert step is not None and step.status == "success" and step.rows_done == result.rows_done
    lines = [r.getMessage() for r in caplog.records]
    progress = [m for m in lines if re.search(r"rows \(.*%\), [\d,]+ rows/s, batch size [\d,]+, ETA", m)]
    assert len(progress) >= 2, lines
    assert any("done" in m and "by the final sweep" in m for m in lines)


def _has_ledger(conn: psycopg.Connection) -> bool:
    return _count(conn, "SELECT (to_regclass('airflow_expand.steps') IS NOT NULL)::int") == 1


def _run_partitions(connect: Connector, spec: BackfillSpec, migration_id: str = "m") -> list[BackfillResult]:
    results: dict[int, BackfillResult] = {}
    errors: list[BaseException] = []

    def one(part: int) -> None:
        try:
            results[part] = run_backfill(connect, spec, migration_id=migration_id, partition=part, log=LOG)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(p,)) for p in range(spec.partitions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return [results[p] for p in range(spec.partitions)]


def test_two_partitions_cover_the_key_space_exactly_once(
    pg_conn: psycopg.Connection, pg_connect: Connector
) -> None:
    _make_products(pg_conn, 30_000, step=3)
    spec = dataclasses.replace(SPEC, set="name = title, hits = hits + 1", partitions=2, batch_size=1_000)
    first, second = _run_partitions(pg_connect, spec)

    _assert_complete(pg_conn)
    assert _count(pg_conn, "SELECT count(*) FROM products WHERE title IS NOT NULL AND hits <> 1") == 0
    assert _count(pg_conn, "SELECT count(*) FROM products WHERE title IS NULL AND hits <> 0") == 0
    assert first.rows_done + second.rows_done == 30_000 - 600
    assert first.rows_done > 10_000 and second.rows_done > 10_000
    ranges = pg_conn.execute(
        "SELECT part, lower_key, upper_key FROM airflow_expand.backfill_ranges ORDER BY part"
    ).fetchall()
    assert ranges[0][1] is None and ranges[1][2] is None and ranges[0][2] == ranges[1][1]
    steps = sorted((s.part, s.status, s.rows_done) for s in Ledger().steps(pg_conn, "m"))
    assert steps == [(0, "success", first.rows_done), (1, "success", second.rows_done)]

    # A rerun (a retried task) reuses the ranges, finds nothing to do and changes nothing.
    again = _run_partitions(pg_connect, spec)
    assert [r.rows_this_run for r in again] == [0, 0]
    assert _count(pg_conn, "SELECT max(hits) FROM products") == 1


def test_dry_run_counts_and_changes_nothing(pg_conn: psycopg.Connection, pg_connect: Connector) -> None:
    _make_products(pg_conn, 5_000)
    pg_conn.execute("UPDATE products SET name = title WHERE id <= 1000")
    fingerprint = "SELECT md5(string_agg(p::text, ',' ORDER BY id)) FROM products p"
    before = pg_conn.execute(fingerprint).fetchone()
    whole = run_backfill(pg_connect, SPEC, migration_id="m", dry_run=True, log=LOG)
    halves = [
        run_backfill(
            pg_connect,
            dataclasses.replace(SPEC, partitions=2),
            migration_id="m",
            partition=p,
            dry_run=True,
            log=LOG,
        )
        for p in (0, 1)
    ]
    assert whole.dry_run and whole.would_change == 4_000 - 80
    assert sum(h.would_change or 0 for h in halves) == whole.would_change
    assert pg_conn.execute(fingerprint).fetchone() == before
    assert not _has_ledger(pg_conn)


def test_sweep_is_bounded_when_matching_rows_keep_appearing(
    pg_conn: psycopg.Connection, pg_connect: Connector
) -> None:
    """Old code still inserting rows without the new column: the sweep must stop and say so."""
    _make_products(pg_conn, 2_000)
    pg_conn.execute(
        """
        CREATE FUNCTION old_code() RETURNS trigger AS $$
        BEGIN
          INSERT INTO products (shop_id, title) VALUES (NEW.shop_id, 'again ' || NEW.id);
          RETURN NULL;
        END;
        $$ LANGUAGE plpgsql;
        CREATE TRIGGER old_code AFTER UPDATE ON products FOR EACH ROW EXECUTE FUNCTION old_code();
        """
    )
    spec = dataclasses.replace(SPEC, max_sweep_rounds=3)
    with pytest.raises(
        BackfillSweepError, match=r"rows keep matching where .* after 3 sweep rounds"
    ) as caught:
        run_backfill(pg_connect, spec, migration_id="m", log=LOG)
    assert "sync trigger" in str(caught.value)
    step = Ledger().step(pg_conn, "m", "backfill:products")
    assert step is not None and step.status == "failed" and "rows keep matching" in (step.error or "")


def test_uuid_key_partitioned_table_and_schema_qualified_name(
    pg_conn: psycopg.Connection, pg_connect: Connector
) -> None:
    pg_conn.execute(
        """
        CREATE SCHEMA shop;
        CREATE TABLE shop.items (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), title text, name text);
        INSERT INTO shop.items (title) SELECT 'item ' || g || ' 100%' FROM generate_series(1, 3000) g;
        CREATE TABLE events (id bigint PRIMARY KEY, title text, name text) PARTITION BY RANGE (id);
        CREATE TABLE events_1 PARTITION OF events FOR VALUES FROM (0) TO (1500);
        CREATE TABLE events_2 PARTITION OF events FOR VALUES FROM (1500) TO (100000);
        INSERT INTO events SELECT g, 'event ' || g FROM generate_series(1, 3000) g;
        """
    )
    items = BackfillSpec(
        table="shop.items",
        set="name = replace(title, '%', ' percent')",
        where="name IS NULL AND title LIKE '%\\%'",
        batch_size=400,
        target_batch_time=None,
        pause=dt.timedelta(0),
        partitions=3,
    )
    results = _run_partitions(pg_connect, items)
    assert sum(r.rows_done for r in results) == 3000
    assert (
        _count(
            pg_conn,
            "SELECT count(*) FROM shop.items WHERE name IS DISTINCT FROM replace(title, '%', ' percent')",
        )
        == 0
    )

    events = dataclasses.replace(SPEC, table="events", batch_size=500, target_batch_time=None, partitions=2)
    results = _run_partitions(pg_connect, events, migration_id="m2")
    assert sum(r.rows_done for r in results) == 3000
    assert _count(pg_conn, "SELECT count(*) FROM events WHERE name IS DISTINCT FROM title") == 0


def test_changing_partitions_midway_is_refused(pg_conn: psycopg.Connection, pg_connect: Connector) -> None:
    _make_products(pg_conn, 1_000)
    ledger = Ledger()
    ledger.ensure(pg_conn)
    spec = dataclasses.replace(SPEC, partitions=2)
    run_backfill(pg_connect, spec, migration_id="m", partition=0, log=LOG)
    # Part 1 of the two-way plan was started and died (still marked running).
    ledger.start_step(pg_conn, "m", "backfill:products", 1)
    with pytest.raises(Exception, match=r"started with 2 partitions .* cannot switch to 3"):
        run_backfill(
            pg_connect, dataclasses.replace(SPEC, partitions=3), migration_id="m", partition=0, log=LOG
        )
    run_backfill(pg_connect, spec, migration_id="m", partition=1, log=LOG)
    _assert_complete(pg_conn)
