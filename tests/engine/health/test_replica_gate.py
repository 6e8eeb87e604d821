"""The replica lag gate against a real streaming replica: paused replay holds the backfill, resumed replay
lets it finish; a role that may not see the replicas' positions gets one warning, not a failure."""

from __future__ import annotations

import datetime as dt
import logging
import time

import psycopg
from psycopg import sql

from airflow_provider_expand.engine.health.settings import HealthSettings
from tests.engine.health.helpers import (
    PACED,
    Backfill,
    Lines,
    eventually,
    hold_noted,
    make_products,
    rows_done,
    undone,
)
from tests.private_cluster import Pair

MB = 1024 * 1024


def _replay(pair: Pair, action: str) -> None:
    with psycopg.connect(pair.replica.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SELECT {}()").format(sql.Identifier(f"pg_wal_replay_{action}")))


def _replica_dsn(pair: Pair, primary_db: str) -> str:
    return pair.replica.dsn.rsplit("/", 1)[0] + "/" + primary_db.rsplit("/", 1)[1]


def test_paused_replay_holds_the_backfill_until_replay_resumes(pair: Pair, pair_db: str) -> None:
    with psycopg.connect(pair_db, autocommit=True) as conn:
        make_products(conn, 60_000)
    lines = Lines("test.health.replica")
    health = HealthSettings(max_replica_lag_bytes=2 * MB, max_hold=dt.timedelta(minutes=2))
    _replay(pair, "pause")
    try:
        backfill = Backfill(pair_db, lines.log, health=health, spec=PACED)
        backfill.start()
        waited = lines.wait_for("holding: replica lag", timeout=20)
        assert waited < 10, f"the gate held only after {waited:.1f} s"
        held_at = rows_done(pair_db)
        time.sleep(2.0)
        assert backfill.is_alive(), backfill.error
        assert rows_done(pair_db) == held_at < 60_000  # held: no batch while replay is paused
        noted = hold_noted(pair_db)  # the ledger says so too, for the migration view
        assert len(noted) == 1 and noted[0].startswith("holding: replica lag"), noted
    finally:
        _replay(pair, "resume")
    backfill.join(90)
    assert backfill.error is None, backfill.error
    result = backfill.result
    assert result is not None and result.rows_done == 60_000
    assert result.holds["replica lag"]["holds"] >= 1 and result.holds["replica lag"]["seconds"] >= 2.0
    assert lines.matching("holding ") and lines.matching("; going on")
    assert hold_noted(pair_db) == []  # released
    with psycopg.connect(pair_db, autocommit=True) as conn:
        assert undone(conn) == 0
    # ...and the replica, replaying again, ends with the same rows
    with psycopg.connect(_replica_dsn(pair, pair_db), autocommit=True) as replica:
        eventually(lambda: undone(replica) == 0, 30, "the replica caught up")
    lines.close()


def test_a_role_that_cannot_see_the_replicas_is_warned_once_and_backfills(pair: Pair, pair_db: str) -> None:
    role = f"app_{pair_db.rsplit('_', 1)[1]}"
    with psycopg.connect(pair_db, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(role)))
        database = sql.Identifier(pair_db.rsplit("/", 1)[1])
        conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(database, sql.Identifier(role)))
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        make_products(conn, 30_000)
    lines = Lines("test.health.role")
    as_role = pair_db.replace("postgres@", f"{role}@")
    backfill = Backfill(as_role, lines.log, health=HealthSettings(max_replica_lag_bytes=1))
    try:
        backfill.run()  # in this thread
        assert backfill.error is None, backfill.error
        assert backfill.result is not None and backfill.result.rows_done == 30_000
        warnings = lines.matching("cannot be read", logging.WARNING)
        for gate in ("replica lag", "transaction age", "wraparound autovacuum"):
            assert len([w for w in warnings if f"gate {gate} " in w]) == 1, warnings
        assert backfill.result.holds == {}
        with psycopg.connect(pair_db, autocommit=True) as conn:
            assert undone(conn) == 0
    finally:
        lines.close()
        with psycopg.connect(pair_db, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
