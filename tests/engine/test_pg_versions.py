"""The version matrix is real: each run of tests/engine talks to the major it is named after, and the
engine's reads of the catalog views whose columns change between majors work there (each is also covered
by its own module's tests: index progress in tests/engine/index, pg_stat_activity in preflight and ddl)."""

from __future__ import annotations

import datetime as dt
import logging

import psycopg

from airflow_provider_expand.engine.index import progress
from airflow_provider_expand.engine.preflight.checks import (
    check_connection_headroom,
    check_server_version,
    long_transactions,
)

LOG = logging.getLogger("test.versions")


def test_the_server_is_the_major_the_run_names(pg_conn: psycopg.Connection, pg_major: str | None) -> None:
    version = check_server_version(pg_conn, LOG)
    if pg_major is not None:
        assert version.major == int(pg_major), (version, pg_major)
    assert version.major >= 15


def test_catalog_reads_of_the_engine_work_on_this_major(pg_conn: psycopg.Connection, pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, application_name="old-transaction") as old:
        old.execute("SELECT txid_current()")  # a transaction holding an xid, left open
        found = long_transactions(pg_conn, dt.timedelta(0))
        assert any(t.application_name == "old-transaction" for t in found), found
        headroom = check_connection_headroom(pg_conn, LOG)
        assert 2 <= headroom.used < headroom.max_connections
        # the index monitor's sample (pg_stat_activity joined to pg_stat_progress_create_index)
        row = pg_conn.execute(progress._STATUS_SQL, (old.info.backend_pid,)).fetchone()
        assert row is not None and row[3] is None  # no index build: no progress row
