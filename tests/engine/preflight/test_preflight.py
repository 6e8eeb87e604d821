"""Preflight checks against a real PostgreSQL and Redis: long transactions, version, headroom, load."""

from __future__ import annotations

import datetime as dt
import logging
import re
import socket
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from airflow_provider_expand.engine.database import Connector
from airflow_provider_expand.engine.preflight.checks import (
    BackupSpaceError,
    ConnectionHeadroomError,
    RedisUnavailableError,
    ServerVersion,
    UnsupportedServerError,
    check_backup_space,
    check_connection_headroom,
    check_server_version,
    judge_server_version,
    long_transactions,
    machine_load,
    redis_clients,
    run_preflight,
)

LOG = logging.getLogger("test.preflight")
SECOND = dt.timedelta(seconds=1)


def test_long_transaction_is_listed_until_it_commits(
    pg_connect: Connector, pg_server_dsn: str, pg_conn: psycopg.Connection
) -> None:
    with pg_connect() as old, pg_connect() as checker, psycopg.connect(pg_server_dsn) as elsewhere:
        old.execute("SELECT 'the old transaction'")  # opens a transaction, then sits idle in it
        elsewhere.execute("SELECT 'another database'")  # old too, but not in the target database
        checker.execute("SELECT 1")  # the checker's own open transaction is never reported
        assert long_transactions(pg_conn, SECOND) == []  # nothing is a second old yet
        time.sleep(1.3)
        found = long_transactions(checker, SECOND)
        assert [t.pid for t in found] == [old.info.backend_pid]
        tx = found[0]
        assert tx.state == "idle in transaction" and tx.query == "SELECT 'the old transaction'"
        assert SECOND < tx.age < dt.timedelta(seconds=30)
        assert f"pid {tx.pid}" in tx.describe() and "the old transaction" in tx.describe()
        assert type(tx).from_json(tx.to_json()) == tx
        assert long_transactions(checker, dt.timedelta(minutes=5)) == []
        old.commit()
        assert long_transactions(checker, SECOND) == []


def test_an_active_long_query_counts_too(pg_connect: Connector, pg_conn: psycopg.Connection) -> None:
    with pg_connect() as busy:
        worker = threading.Thread(target=busy.execute, args=("SELECT pg_sleep(2)",))
        worker.start()
        time.sleep(1.3)
        try:
            found = long_transactions(pg_conn, SECOND)
        finally:
            worker.join()
        assert [(t.pid, t.state, t.query) for t in found] == [
            (busy.info.backend_pid, "active", "SELECT pg_sleep(2)")
        ]


def test_server_version_rules(pg_conn: psycopg.Connection, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=LOG.name):
        version = check_server_version(pg_conn, LOG)
        assert version.major == pg_conn.info.server_version // 10000 >= 12
        assert re.search(r"server version: PostgreSQL \d+\.\d+.* \(ok, >= 12\)", caplog.text)
        caplog.clear()
        judge_server_version(ServerVersion(140002, "14.2"), LOG)
        assert caplog.records[-1].levelno == logging.WARNING and "CONCURRENTLY" in caplog.text
        caplog.clear()
        judge_server_version(ServerVersion(140004, "14.4"), LOG)
        assert caplog.records[-1].levelno == logging.INFO
    with pytest.raises(UnsupportedServerError, match=r"PostgreSQL 11\.9 on db:5432 is too old"):
        judge_server_version(ServerVersion(110009, "11.9"), LOG, where="db:5432")


def test_connection_headroom_warns_and_fails_by_threshold(
    pg_conn: psycopg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=LOG.name):
        headroom = check_connection_headroom(pg_conn, LOG)
        max_connections = int(pg_conn.execute("SHOW max_connections").fetchone()[0])  # type: ignore[index]
        assert headroom.max_connections == max_connections and 1 <= headroom.used <= headroom.usable
        assert "connection headroom:" in caplog.text and "warn at 80%, fail at 95%" in caplog.text
        caplog.clear()
        check_connection_headroom(pg_conn, LOG, warn_at=0.0)
        assert caplog.records[-1].levelno == logging.WARNING and "warn threshold 0%" in caplog.text
    with pytest.raises(ConnectionHeadroomError, match=r"in use .* fail threshold 0%"):
        check_connection_headroom(pg_conn, LOG, fail_at=0.0)


def test_machine_load_logs_load_memory_and_disk(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=LOG.name):
        load = machine_load(["/", tmp_path, tmp_path / "missing"], LOG)
    assert load.cpus >= 1 and len(load.load) == 3 and set(load.disks) == {"/", str(tmp_path)}
    assert "machine load:" in caplog.text and f"disk {tmp_path}:" in caplog.text
    if Path("/proc/meminfo").exists():
        assert load.mem_total and load.mem_available and "memory:" in caplog.text


def test_redis_clients_counts_blocked_and_names_a_dead_redis(
    redis_url: str, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = redis.Redis.from_url(redis_url)
    waiting = threading.Thread(target=blocker.blpop, args=([f"{redis_prefix}:never"],), kwargs={"timeout": 3})
    waiting.start()
    client = redis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + 3
        clients = redis_clients(client, name="app_redis", log=LOG)
        while clients.blocked < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
            clients = redis_clients(client, name="app_redis", log=LOG)
        assert clients.connected >= 2 and clients.blocked >= 1
    finally:
        client.lpush(f"{redis_prefix}:never", "wake")
        waiting.join()
        blocker.close()
        client.close()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    dead = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    with pytest.raises(RedisUnavailableError, match="Redis app_redis does not answer"):
        redis_clients(dead, name="app_redis", log=LOG)


def test_backup_space_needs_database_size_plus_margin(pg_conn: psycopg.Connection, tmp_path: Path) -> None:
    space = check_backup_space(pg_conn, tmp_path, LOG)
    assert space.database_size > 0 and space.needed == int(space.database_size * 1.1)
    assert space.free >= space.needed
    huge_margin = space.free / space.database_size  # needs more than the disk has free
    with pytest.raises(BackupSpaceError, match=rf"backup directory {re.escape(str(tmp_path))}: .*not enough"):
        check_backup_space(pg_conn, tmp_path, LOG, margin=huge_margin)
    missing = tmp_path / f"missing-{uuid.uuid4().hex[:6]}"
    with pytest.raises(BackupSpaceError, match=re.escape(str(missing))):
        check_backup_space(pg_conn, missing, LOG)


def test_run_preflight_reports_every_check(
    pg_conn: psycopg.Connection, redis_client: redis.Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=LOG.name):
        report = run_preflight(
            pg_conn, LOG, backup_directory=tmp_path, redis_client=redis_client, redis_name="app_redis"
        )
    assert report.redis is not None and report.backup_space is not None
    assert report.server.major >= 12 and str(tmp_path) in report.machine.disks
    for line in (
        "server version",
        "connection headroom",
        "machine load",
        "redis app_redis",
        "backup directory",
    ):
        assert line in caplog.text
