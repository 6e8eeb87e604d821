"""``LongTransactionSensor`` through real Airflow connections: preflight lines, holding, passing, failing."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from airflow.sdk.exceptions import AirflowSensorTimeout, TaskDeferred

from airflow_provider_expand.engine.database import Connector
from airflow_provider_expand.engine.errors import DatabaseUnavailableError
from airflow_provider_expand.engine.preflight.checks import (
    BackupSpaceError,
    PreflightError,
    RedisUnavailableError,
    TransactionPoolingError,
)
from airflow_provider_expand.sensors.preflight import LongTransactionSensor
from airflow_provider_expand.triggers.preflight import LongTransactionTrigger

SECOND = dt.timedelta(seconds=1)


def _sensor(**kwargs: Any) -> LongTransactionSensor:
    kwargs.setdefault("max_transaction_age", SECOND)
    kwargs.setdefault("wait", dt.timedelta(minutes=1))
    return LongTransactionSensor(task_id="preflight", postgres_conn_id="app_db", poke_interval=0.2, **kwargs)


def _old_transaction(connect: Connector) -> psycopg.Connection:
    conn = connect()
    conn.execute("SELECT 'still reporting'")  # a transaction left open, idle
    time.sleep(1.2)
    return conn


def test_old_transaction_holds_the_sensor_until_it_commits(
    airflow_conn: dict[str, str], pg_connect: Connector, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sensor = _sensor(redis_conn_id="app_redis", backup_directory=str(tmp_path))
    report = sensor.preflight()
    out = capsys.readouterr().out
    for line in ("server version: PostgreSQL", "connection headroom:", "machine load:", "memory:"):
        assert line in out
    assert "redis app_redis:" in out and f"backup directory {tmp_path}:" in out
    assert report.redis is not None and report.backup_space is not None

    with _old_transaction(pg_connect) as old:
        assert sensor.poke({}) is False
        out = capsys.readouterr().out
        assert f"pid {old.info.backend_pid}" in out and "idle in transaction" in out
        assert "still reporting" in out
        old.commit()
        assert sensor.poke({}) is True


def test_fails_after_wait_naming_the_transaction(airflow_conn: dict[str, str], pg_connect: Connector) -> None:
    with _old_transaction(pg_connect) as old:
        sensor = _sensor(wait=SECOND)
        pattern = rf"(?s)still older than 0:00:01 after waiting 0:00:01.*pid {old.info.backend_pid}"
        with pytest.raises(AirflowSensorTimeout, match=pattern):
            sensor.execute({})


def test_deferrable_defers_to_the_trigger_and_handles_its_events(
    airflow_conn: dict[str, str], pg_connect: Connector
) -> None:
    sensor = _sensor(deferrable=True, wait=dt.timedelta(minutes=10))
    with _old_transaction(pg_connect), pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, LongTransactionTrigger)
    assert (trigger.postgres_conn_id, trigger.max_transaction_age, trigger.wait) == ("app_db", 1.0, 600.0)
    assert deferred.value.method_name == "execute_complete"
    assert "password" not in json.dumps(trigger.serialize()[1])

    assert sensor.execute({}) is None  # nothing old any more: passes without deferring
    sensor.execute_complete({}, {"status": "clear"})
    with pytest.raises(AirflowSensorTimeout, match="pid 42"):
        sensor.execute_complete({}, {"status": "timeout", "message": "1 transaction(s) ... pid 42"})
    with pytest.raises(PreflightError, match="'app_db': boom"):
        sensor.execute_complete({}, {"status": "error", "message": "Postgres connection 'app_db': boom"})
    lost = {"status": "error", "message": "Postgres connection 'app_db': lost", "transient": True}
    with pytest.raises(DatabaseUnavailableError, match="'app_db': lost"):
        sensor.execute_complete({}, lost)


def test_refuses_when_the_backup_could_not_fit(airflow_conn: dict[str, str], tmp_path: Path) -> None:
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    sensor = _sensor(backup_directory=str(tmp_path), space_margin=float(free))  # size x (1 + free) > free
    with pytest.raises(BackupSpaceError, match=f"backup directory {tmp_path}: .*not enough space"):
        sensor.execute({})


def test_a_redis_that_does_not_answer_is_named(
    airflow_conn: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(
        "AIRFLOW_CONN_DEAD_REDIS", json.dumps({"conn_type": "redis", "host": "127.0.0.1", "port": port})
    )
    with pytest.raises(RedisUnavailableError, match="Redis dead_redis does not answer"):
        _sensor(redis_conn_id="dead_redis").preflight()
    with pytest.raises(ValueError, match="wait must be a positive timedelta"):
        _sensor(wait=dt.timedelta(0))


def _through(monkeypatch: pytest.MonkeyPatch, dsn: str) -> None:
    """Point the ``app_db`` Airflow connection at ``dsn`` (a PgBouncer in front of the test database)."""
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    conn = {"conn_type": "postgres", "host": params["host"], "port": int(str(params["port"]))}
    conn.update(login=params.get("user") or "postgres", schema=params["dbname"])
    monkeypatch.setenv("AIRFLOW_CONN_APP_DB", json.dumps(conn))


@pytest.mark.parametrize("deferrable", [False, True])
def test_transaction_pooling_is_refused_before_any_poke_or_deferral(
    airflow_conn: dict[str, str], pgbouncer: Any, monkeypatch: pytest.MonkeyPatch, deferrable: bool
) -> None:
    _through(monkeypatch, pgbouncer("transaction"))
    with pytest.raises(
        TransactionPoolingError, match="Fix: give migrations a direct connection to PostgreSQL"
    ) as refused:
        _sensor(deferrable=deferrable).execute({})  # a TaskDeferred would mean it got past the check
    assert "pool_mode = session) is fine" in str(refused.value)


def test_session_pooling_passes_the_sensor(
    airflow_conn: dict[str, str], pgbouncer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _through(monkeypatch, pgbouncer("session"))
    assert _sensor().execute({}) is None
