"""``PgDumpOperator`` / ``PgRestoreOperator`` through real Airflow connections, real pg_dump / pg_restore."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from airflow.sdk._shared.secrets_masker.secrets_masker import redact
from psycopg import sql

from airflow_provider_expand.engine.backup.dump import RestoreRefusedError, judge_backup
from airflow_provider_expand.operators.backup import PgDumpOperator, PgRestoreOperator


@pytest.fixture
def products(pg_conn: psycopg.Connection) -> psycopg.Connection:
    pg_conn.execute("CREATE TABLE products (id int PRIMARY KEY, title text)")
    pg_conn.execute("INSERT INTO products SELECT g, 'title ' || g FROM generate_series(1, 500) g")
    return pg_conn


@pytest.fixture
def app_db_with_password(
    airflow_conn: dict[str, str], pg_conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """Re-point ``app_db`` at a login role with a password; yields the password."""
    role, password = f"expand_dump_{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    pg_conn.execute(
        sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)
        )
    )
    conn = json.loads(os.environ["AIRFLOW_CONN_APP_DB"])
    conn.update(login=role, password=password)
    monkeypatch.setenv("AIRFLOW_CONN_APP_DB", json.dumps(conn))
    yield password
    pg_conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_dump_returns_a_private_fresh_backup(
    airflow_conn: dict[str, str], products: psycopg.Connection, tmp_path: Path
) -> None:
    path = Path(
        PgDumpOperator(task_id="backup", postgres_conn_id="app_db", directory=str(tmp_path)).execute({})
    )
    assert path.parent == tmp_path and path.name.startswith("pre_migration_") and path.suffix == ".dump"
    assert path.stat().st_mode & 0o777 == 0o600
    verdict = judge_backup(tmp_path, max_age=dt.timedelta(minutes=5), log=logging.getLogger("test"))
    assert verdict.fresh and verdict.path == str(path)


def test_dump_keeps_the_password_out_of_argv_and_logs(
    app_db_with_password: str,
    products: psycopg.Connection,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    password = app_db_with_password
    path = PgDumpOperator(task_id="backup", postgres_conn_id="app_db", directory=str(tmp_path)).execute({})
    out = capsys.readouterr()
    assert "running: " in out.out and "pg_dump --format=custom --no-password --file" in out.out
    assert "backing up expand_dump_" in out.out  # really connected as the role with the password
    assert password not in out.out and password not in out.err
    assert password not in str(redact(f"dsn password={password}"))  # registered with the secret masker
    assert Path(path).stat().st_size > 0


def test_restore_needs_the_database_name_as_confirmation(
    airflow_conn: dict[str, str], products: psycopg.Connection, tmp_path: Path
) -> None:
    path = PgDumpOperator(task_id="backup", postgres_conn_id="app_db", directory=str(tmp_path)).execute({})
    products.execute("DELETE FROM products WHERE id > 100")
    dbname = products.info.dbname

    for wrong in ("", "  ", "postgres", dbname.upper()):
        op = PgRestoreOperator(task_id="restore", postgres_conn_id="app_db", dump_path=path, confirm=wrong)
        with pytest.raises(RestoreRefusedError, match="refusing to restore"):
            op.execute({})
        assert products.execute("SELECT count(*) FROM products").fetchone() == (100,)

    PgRestoreOperator(task_id="restore", postgres_conn_id="app_db", dump_path=path, confirm=dbname).execute(
        {}
    )
    assert products.execute("SELECT count(*) FROM products").fetchone() == (500,)
