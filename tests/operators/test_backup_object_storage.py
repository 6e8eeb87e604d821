"""``backup.directory`` as Airflow object storage: the dump streams to a real S3-compatible server (moto's,
on loopback, reached through an Airflow ``aws`` connection) or to a ``file://`` URL, the freshness check reads
the table of contents from there, and the restore DAG's operator restores from there."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import psycopg
import pytest
from airflow.sdk import PokeReturnValue

from airflow_provider_expand.dag_factory import build_migration_dags
from airflow_provider_expand.engine.backup.store import BackupDirectoryError
from airflow_provider_expand.hooks.backup_store import BackupLocationError
from airflow_provider_expand.operators.backup import PgDumpOperator, PgRestoreOperator
from airflow_provider_expand.sensors.backup import BackupFreshnessSensor
from tests.dags.harness import copy_migration
from tests.ports import free_port as _free_port

CONN_ID = "expand_backups_s3"
KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``moto_server`` on a free loopback port: a real S3 API over HTTP, not a mock in this process."""
    binary = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
    assert binary, "moto_server missing: pip install 'moto[server]' (the test extra has it)"
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(endpoint, timeout=2)
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start: {log.read_text()}") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def bucket(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A bucket of this test's own, and the Airflow connection ``expand_backups_s3`` pointing at moto."""
    conn = {
        "conn_type": "aws",
        "login": KEYS["aws_access_key_id"],
        "password": KEYS["aws_secret_access_key"],
        "extra": {"endpoint_url": moto_endpoint, "region_name": KEYS["region_name"]},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))
    name = f"expand-backups-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, **KEYS)
    s3.create_bucket(Bucket=name)
    yield name
    for item in s3.list_objects_v2(Bucket=name).get("Contents", []):
        s3.delete_object(Bucket=name, Key=item["Key"])
    s3.delete_bucket(Bucket=name)


def _keys(moto_endpoint: str, bucket: str) -> list[str]:
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, **KEYS)
    return sorted(item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


@pytest.fixture
def products(airflow_conn: dict[str, str], pg_conn: psycopg.Connection) -> psycopg.Connection:
    pg_conn.execute("CREATE TABLE products (id int PRIMARY KEY, title text)")
    pg_conn.execute("INSERT INTO products SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
    return pg_conn


def _sensor(directory: str, **kwargs: object) -> BackupFreshnessSensor:
    kwargs.setdefault("max_age", dt.timedelta(hours=1))
    return BackupFreshnessSensor(task_id="fresh", directory=directory, **kwargs)  # type: ignore[arg-type]


def test_s3_round_trip_dump_freshness_restore(
    products: psycopg.Connection, bucket: str, moto_endpoint: str
) -> None:
    url = f"s3://{CONN_ID}@{bucket}/postgres/shop"
    where = PgDumpOperator(task_id="dump", postgres_conn_id="app_db", directory=url).execute({})
    assert where.startswith(f"{url}/pre_migration_") and where.endswith(".dump")
    keys = _keys(moto_endpoint, bucket)
    assert keys == [f"postgres/shop/{where.rsplit('/', 1)[1]}"], keys  # no partial object left behind

    result = _sensor(url, must_contain=["products"]).poke({})
    assert isinstance(result, PokeReturnValue) and result.is_done and result.xcom_value == where

    products.execute("DELETE FROM products WHERE id > 10")
    dbname = products.info.dbname
    PgRestoreOperator(task_id="restore", postgres_conn_id="app_db", dump_path=where, confirm=dbname).execute(
        {}
    )
    assert products.execute("SELECT count(*), sum(id) FROM products").fetchone() == (
        20000,
        20000 * 20001 // 2,
    )


def test_s3_stale_truncated_and_unreadable_backups_are_refused(
    products: psycopg.Connection, bucket: str, moto_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"s3://{CONN_ID}@{bucket}/dumps"
    where = PgDumpOperator(task_id="dump", postgres_conn_id="app_db", directory=url).execute({})
    assert _sensor(url, must_contain=["orders"]).poke({}) is False
    assert f"backup is not fresh: {where} has no TABLE DATA for orders" in capsys.readouterr().out
    time.sleep(1.2)  # S3 sets LastModified itself: the dump is older than a 1 s max_age now
    assert _sensor(url, max_age=dt.timedelta(seconds=1)).poke({}) is False
    assert "more than max_age 0:00:01" in capsys.readouterr().out

    s3 = boto3.client("s3", endpoint_url=moto_endpoint, **KEYS)
    whole = s3.get_object(Bucket=bucket, Key=f"dumps/{where.rsplit('/', 1)[1]}")["Body"].read()
    # newer objects win: a truncated copy (its table of contents intact), then one that is no dump at all
    s3.put_object(Bucket=bucket, Key="dumps/pre_migration_20990101_0000.dump", Body=whole[: len(whole) // 2])
    assert _sensor(url).poke({}) is False
    assert "pre_migration_20990101_0000.dump is truncated or corrupt" in capsys.readouterr().out
    time.sleep(1.1)
    s3.put_object(Bucket=bucket, Key="dumps/pre_migration_20990101_0001.dump", Body=b"not a dump")
    assert _sensor(url).poke({}) is False
    assert "pg_restore --list cannot read" in capsys.readouterr().out


def test_an_unknown_connection_is_named_and_nothing_is_written(
    products: psycopg.Connection, bucket: str, moto_endpoint: str
) -> None:
    url = f"s3://no_such_conn@{bucket}/dumps"
    expected = rf"backup.directory {url}: Airflow connection 'no_such_conn' does not exist"
    with pytest.raises(BackupLocationError, match=expected):
        PgDumpOperator(task_id="dump", postgres_conn_id="app_db", directory=url).execute({})
    with pytest.raises(BackupLocationError, match=expected):
        _sensor(url).poke({})
    assert _keys(moto_endpoint, bucket) == []
    with pytest.raises(
        BackupLocationError, match=r"backup.directory nosuch://x/y: no object storage for scheme"
    ):
        _sensor("nosuch://x/y").poke({})


def test_a_file_url_is_private_and_judged_from_the_stream(
    products: psycopg.Connection, tmp_path: Path
) -> None:
    url = f"file://{tmp_path}"
    where = PgDumpOperator(task_id="dump", postgres_conn_id="app_db", directory=url).execute({})
    path = Path(where.removeprefix("file://"))
    assert path.parent == tmp_path and path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    result = _sensor(url, must_contain=["public.products"]).poke({})
    assert isinstance(result, PokeReturnValue) and result.xcom_value == where
    missing = f"file://{tmp_path}/missing"
    with pytest.raises(Exception, match=rf"backup.directory {missing} does not exist"):
        _sensor(missing).poke({})


def test_a_missing_bucket_is_named(bucket: str) -> None:
    url = f"s3://{CONN_ID}@{bucket}-missing/dumps"
    with pytest.raises(
        BackupDirectoryError, match=rf"backup.directory {url}: bucket '{bucket}-missing' does not"
    ):
        _sensor(url).poke({})


def test_a_spec_with_an_s3_directory_builds_the_dags_with_urls(tmp_path: Path) -> None:
    url = f"s3://{CONN_ID}@acme-backups/shop/"
    folder = copy_migration(tmp_path, "s3_backup", backup={"directory": url, "take": True})
    dags = build_migration_dags(folder.parent)
    dump = dags["s3_backup"].get_task("backup.dump")
    assert isinstance(dump, PgDumpOperator) and dump.directory == url
    restore = dags["restore_from_backup__s3_backup"].get_task("restore")
    assert isinstance(restore, PgRestoreOperator)
    assert restore.dump_path == "s3://expand_backups_s3@acme-backups/shop/{{ params.dump_file }}"
    # the preflight's disk-space check is for local directories only
    assert dags["s3_backup"].get_task("preflight").backup_directory == url  # type: ignore[attr-defined]
