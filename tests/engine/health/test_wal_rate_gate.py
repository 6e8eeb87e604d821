"""The WAL rate gate on the private primary (no other session's WAL there): a backfill writing faster than
max_wal_rate holds until the rate over the last seconds drops, and still finishes."""

from __future__ import annotations

import datetime as dt

import psycopg

from airflow_provider_expand.engine.health.settings import HealthSettings
from tests.engine.health.helpers import PACED, Backfill, Lines, make_products, undone
from tests.private_cluster import Pair

MB = 1024 * 1024


def test_a_backfill_over_max_wal_rate_holds_and_still_finishes(pair: Pair, pair_db: str) -> None:
    with psycopg.connect(pair_db, autocommit=True) as conn:
        make_products(conn, 40_000)
    lines = Lines("test.health.wal")
    health = HealthSettings(max_wal_rate=1 * MB, max_replica_lag_bytes=None, max_hold=dt.timedelta(minutes=1))
    backfill = Backfill(pair_db, lines.log, health=health, spec=PACED)
    backfill.run()  # in this thread
    assert backfill.error is None, backfill.error
    result = backfill.result
    assert result is not None and result.rows_done == 40_000
    assert result.holds["WAL rate"]["holds"] >= 1 and result.held_seconds > 0
    (first, *_) = lines.matching("holding: WAL rate")
    assert "/s > 1 MB/s" in first, first
    with psycopg.connect(pair_db, autocommit=True) as conn:
        assert undone(conn) == 0
    lines.close()
