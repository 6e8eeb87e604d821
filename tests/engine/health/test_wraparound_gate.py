"""The wraparound gate's read against a real autovacuum *to prevent wraparound* of the table."""

from __future__ import annotations

import time

import psycopg

from airflow_provider_expand.engine.health.wraparound import WraparoundVacuumGate
from tests.engine.health.helpers import make_products
from tests.private_cluster import Pair


def test_the_gate_sees_a_wraparound_autovacuum_of_the_table(pair: Pair, pair_db: str) -> None:
    with psycopg.connect(pair_db, autocommit=True) as conn:
        make_products(conn, 50_000)
        # The table's wraparound limit as low as it goes, its autovacuum slowed down; 101,000 transactions
        # later autovacuum must vacuum it to prevent wraparound.
        conn.execute(
            "ALTER TABLE products SET (autovacuum_freeze_max_age = 100000, autovacuum_vacuum_cost_delay = 100,"
            " autovacuum_vacuum_cost_limit = 1)"
        )
        row = conn.execute("SELECT 'products'::regclass::oid").fetchone()
        assert row is not None
        gate = WraparoundVacuumGate(int(row[0]), "products")
        assert gate.read(conn) is None  # nothing runs yet
        conn.execute(
            "DO $$ BEGIN FOR i IN 1..101000 LOOP PERFORM pg_current_xact_id(); COMMIT; END LOOP; END $$"
        )
        deadline, seen = time.monotonic() + 45, None
        while seen is None and time.monotonic() < deadline:
            seen = gate.read(conn)
            time.sleep(0.02)
        assert seen is not None and seen.startswith("wraparound autovacuum running on products (pid ")
