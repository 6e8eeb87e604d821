"""The archive backlog gate on a private primary with ``archive_mode = on``: a failing archive_command
holds the backfill once segments pile up; when it succeeds again the backfill finishes."""

from __future__ import annotations

import datetime as dt

import psycopg

from airflow_provider_expand.engine.health.settings import HealthSettings
from tests.engine.health.helpers import Backfill, Lines, eventually, make_products, rows_done, undone
from tests.private_cluster import Pair


def _ready(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'").fetchone()
    assert row is not None
    return int(row[0])


def test_a_failing_archive_command_holds_the_backfill_until_it_archives_again(
    pair: Pair, pair_db: str
) -> None:
    lines = Lines("test.health.archive")
    with psycopg.connect(pair_db, autocommit=True) as conn:
        make_products(conn, 40_000)
        pair.archiving(False)
        try:
            conn.execute("CREATE TABLE filler (n int)")
            for n in range(4):  # four finished segments the archiver cannot archive
                conn.execute("INSERT INTO filler VALUES (%s)", (n,))
                conn.execute("SELECT pg_switch_wal()")
            eventually(lambda: _ready(conn) >= 3, 20, "segments waiting for the archiver")
            health = HealthSettings(
                max_archive_backlog=2, max_replica_lag_bytes=None, max_hold=dt.timedelta(minutes=2)
            )
            backfill = Backfill(pair_db, lines.log, health=health)
            backfill.start()
            lines.wait_for("holding: archive backlog", timeout=10)
            held_at = rows_done(pair_db)
            eventually(lambda: not backfill.is_alive() or rows_done(pair_db) == held_at, 5, "held")
            assert backfill.is_alive() and rows_done(pair_db) < 40_000, backfill.error
        finally:
            pair.archiving(True)
        conn.execute("SELECT pg_reload_conf()")  # wakes the archiver, which retries at once
        backfill.join(90)
        assert backfill.error is None, backfill.error
        assert backfill.result is not None and backfill.result.rows_done == 40_000
        assert backfill.result.holds["archive backlog"]["holds"] >= 1
        assert lines.matching("archive backlog") and lines.matching("; going on")
        assert undone(conn) == 0
        assert _ready(conn) <= 2
    lines.close()
