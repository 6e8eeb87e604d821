"""The locks steps share (creating the ledger, planning a backfill's ranges): a step that finds one held
waits its turn instead of failing on its lock_timeout, and needs none once the ledger exists."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from airflow_provider_expand.engine import errors
from airflow_provider_expand.engine.backfill.plan import resolve_target
from airflow_provider_expand.engine.backfill.ranges import claim_range
from airflow_provider_expand.engine.backfill.run import BackfillSpec, run_backfill
from airflow_provider_expand.engine.database import Connector
from airflow_provider_expand.engine.ledger.lock import LEDGER_LOCK, ranges_key
from airflow_provider_expand.engine.ledger.store import Ledger

LOG = logging.getLogger("test_shared_locks")
SPEC = BackfillSpec(
    table="products",
    set="name = title",
    where="name IS NULL",
    batch_size=500,
    target_batch_time=None,
    pause=dt.timedelta(0),
    partitions=2,
)
RANGES_LOCK = ranges_key("m", "backfill:products")


@pytest.fixture
def products(pg_conn: psycopg.Connection) -> psycopg.Connection:
    pg_conn.execute("CREATE TABLE products (id bigint PRIMARY KEY, title text, name text)")
    pg_conn.execute("INSERT INTO products (id, title) SELECT g, 'p' || g FROM generate_series(1, 2000) g")
    pg_conn.execute("ANALYZE products")
    return pg_conn


@pytest.fixture
def holder(pg_connect: Connector) -> Iterator[psycopg.Connection]:
    """Another step's session, holding shared locks in an open transaction."""
    conn = pg_connect()
    yield conn
    conn.close()


def _hold(conn: psycopg.Connection, *keys: str, seconds: float) -> threading.Timer:
    for key in keys:
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))
    release = threading.Timer(seconds, conn.commit)
    release.start()
    return release


def test_ensure_takes_no_lock_once_the_ledger_exists(
    products: psycopg.Connection, pg_connect: Connector, holder: psycopg.Connection
) -> None:
    Ledger().ensure(products)
    release = _hold(holder, LEDGER_LOCK, seconds=3)
    with pg_connect() as conn:
        conn.execute("SET lock_timeout = '100ms'")
        began = time.monotonic()
        Ledger().ensure(conn, lock_wait=dt.timedelta(milliseconds=200))
        assert time.monotonic() - began < 0.2
    release.join()


def test_creating_the_ledger_waits_for_the_lock_and_gives_up_transiently(
    products: psycopg.Connection, pg_connect: Connector, holder: psycopg.Connection
) -> None:
    release = _hold(holder, LEDGER_LOCK, seconds=1.5)
    with pg_connect() as conn:
        conn.autocommit = True
        conn.execute("SET lock_timeout = '200ms'")  # waits longer than this, and still succeeds
        with pytest.raises(errors.ConcurrencyConflictError, match="still held by another session"):
            Ledger().ensure(conn, lock_wait=dt.timedelta(milliseconds=300))
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE  # nothing left open
        began = time.monotonic()
        Ledger().ensure(conn, lock_wait=dt.timedelta(seconds=10))
        assert 0.8 <= time.monotonic() - began < 5
    release.join()
    assert Ledger().installed(products)


def test_a_partition_waits_for_a_sibling_planning_longer_than_its_lock_timeout(
    products: psycopg.Connection, pg_connect: Connector, holder: psycopg.Connection
) -> None:
    with pg_connect() as conn:
        conn.autocommit = True
        target = resolve_target(conn, SPEC)
        conn.execute("SET lock_timeout = '200ms'")
        release = _hold(holder, LEDGER_LOCK, RANGES_LOCK, seconds=1.5)
        began = time.monotonic()
        key_range, record = claim_range(
            conn, Ledger(), target, migration_id="m", step=SPEC.step, part=1, partitions=2, batch_size=500
        )
        waited = time.monotonic() - began
        release.join()
    assert 1.3 <= waited < 5, waited
    assert key_range.upper is None and key_range.lower is not None and record.status == "running"


@pytest.mark.one_pg_version("advisory-lock waits past lock_timeout: the engine's polling")
def test_a_backfill_partition_outwaits_a_sibling_holding_the_locks_past_the_batch_lock_timeout(
    products: psycopg.Connection, pg_connect: Connector, holder: psycopg.Connection
) -> None:
    # the backfill session's own lock_timeout is 10 s (BATCH_LOCK_TIMEOUT): hold the shared locks longer,
    # on a fresh database, where the partition must create the ledger and the ranges table itself
    release = _hold(holder, LEDGER_LOCK, RANGES_LOCK, seconds=11)
    began = time.monotonic()
    result = run_backfill(pg_connect, SPEC, migration_id="m", partition=0, log=LOG)
    took = time.monotonic() - began
    release.join()
    assert took >= 10.5 and result.rows_done > 0
    other = run_backfill(pg_connect, SPEC, migration_id="m", partition=1, log=LOG)
    assert result.rows_done + other.rows_done == 2000
    assert products.execute("SELECT count(*) FROM products WHERE name IS NULL").fetchone() == (0,)
