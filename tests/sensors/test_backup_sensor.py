"""``BackupFreshnessSensor`` on real dumps: fresh passes with its path, stale / truncated / incomplete wait."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

import psycopg
import pytest
from airflow.sdk import PokeReturnValue
from airflow.sdk.exceptions import AirflowSensorTimeout

from airflow_provider_expand.engine.backup.dump import BackupDirectoryError
from airflow_provider_expand.operators.backup import PgDumpOperator
from airflow_provider_expand.sensors.backup import BackupFreshnessSensor

HOUR = dt.timedelta(hours=1)


@pytest.fixture
def dump(airflow_conn: dict[str, str], pg_conn: psycopg.Connection, tmp_path: Path) -> Path:
    pg_conn.execute("CREATE TABLE products (id int PRIMARY KEY, title text)")
    pg_conn.execute("INSERT INTO products SELECT g, md5(g::text) FROM generate_series(1, 3000) g")
    return Path(
        PgDumpOperator(task_id="backup", postgres_conn_id="app_db", directory=str(tmp_path)).execute({})
    )


def _sensor(directory: Path, **kwargs: object) -> BackupFreshnessSensor:
    return BackupFreshnessSensor(task_id="backup_fresh", directory=str(directory), max_age=HOUR, **kwargs)  # type: ignore[arg-type]


def test_fresh_dump_passes_and_returns_its_path(dump: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = _sensor(dump.parent, must_contain=["products", "public.products"]).poke({})
    assert isinstance(result, PokeReturnValue) and result.is_done and result.xcom_value == str(dump)
    out = capsys.readouterr().out
    assert f"backup is fresh: {dump}" in out and "every data block read" in out


def test_stale_truncated_and_incomplete_dumps_do_not_pass(
    dump: Path, pg_conn: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _sensor(dump.parent, must_contain=["orders"]).poke({}) is False
    assert f"backup is not fresh: {dump} has no TABLE DATA for orders" in capsys.readouterr().out

    dump.write_bytes(dump.read_bytes()[:-500])  # truncated, and therefore also just modified
    assert _sensor(dump.parent).poke({}) is False
    assert "is truncated or corrupt" in capsys.readouterr().out

    old = (dt.datetime.now(dt.UTC) - 2 * HOUR).timestamp()
    os.utime(dump, (old, old))
    assert _sensor(dump.parent).poke({}) is False
    assert "more than max_age 1:00:00" in capsys.readouterr().out


def test_timeout_says_why_and_missing_directory_fails_at_once(tmp_path: Path) -> None:
    (tmp_path / "pre_migration_20250101_0000.dump").write_bytes(b"not a dump")
    with pytest.raises(AirflowSensorTimeout, match=r"no fresh backup after .*pg_restore --list cannot read"):
        _sensor(tmp_path, timeout=0, poke_interval=0.1).execute({})
    missing = tmp_path / "missing"
    with pytest.raises(BackupDirectoryError, match=re.escape(str(missing))):
        _sensor(missing).poke({})
    with pytest.raises(ValueError, match="max_age must be a positive timedelta"):
        BackupFreshnessSensor(task_id="x", directory=str(tmp_path), max_age=dt.timedelta(0))
