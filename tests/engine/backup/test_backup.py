"""Backups against a real PostgreSQL and the real pg_dump / pg_restore: take, judge, restore."""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from airflow_provider_expand.engine.backup.dump import (
    BackupDirectoryError,
    BackupFileError,
    RestoreRefusedError,
    dump_database,
    judge_backup,
    missing_tables,
    parse_toc,
    restore_dump,
)
from airflow_provider_expand.engine.backup.pg_tools import (
    PgTarget,
    PgToolError,
    client_env,
    resolve_tool,
    tool_major_version,
)

LOG = logging.getLogger("test.backup")
HOUR = dt.timedelta(hours=1)


@pytest.fixture
def shop_db(pg_conn: psycopg.Connection) -> psycopg.Connection:
    """The test database with ``products`` (5000 rows, so data dominates the dump) and ``shops`` (2)."""
    pg_conn.execute("CREATE TABLE shops (id int PRIMARY KEY, name text NOT NULL)")
    pg_conn.execute("INSERT INTO shops VALUES (1, 'one'), (2, 'two')")
    pg_conn.execute("CREATE TABLE products (id int PRIMARY KEY, shop_id int REFERENCES shops, title text)")
    pg_conn.execute(
        "INSERT INTO products SELECT g, 1 + g % 2, 'title ' || md5(g::text) FROM generate_series(1, 5000) g"
    )
    return pg_conn


def _target(conn: psycopg.Connection) -> tuple[PgTarget, int]:
    return PgTarget.from_connection(conn), conn.info.server_version // 10000


def _dump(conn: psycopg.Connection, directory: Path, **kwargs: object) -> Path:
    target, major = _target(conn)
    return Path(dump_database(target, directory, log=LOG, server_major=major, **kwargs))  # type: ignore[arg-type]


def test_dump_is_private_named_by_minute_and_fresh(shop_db: psycopg.Connection, tmp_path: Path) -> None:
    when = dt.datetime(2025, 1, 2, 3, 4, 59, tzinfo=dt.UTC)
    old_umask = os.umask(0)  # the mode must come from the open call, not from a kind umask
    try:
        first = _dump(shop_db, tmp_path, now=when)
        second = _dump(shop_db, tmp_path, now=when)
    finally:
        os.umask(old_umask)
    assert first == tmp_path / "pre_migration_20250102_0304.dump"
    assert second == tmp_path / "pre_migration_20250102_0304_2.dump"  # never replaces a backup
    assert first.stat().st_mode & 0o777 == 0o600 and second.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name, second.name]  # no .partial left

    verdict = judge_backup(tmp_path, max_age=HOUR, log=LOG, must_contain=["products", "public.shops"])
    assert verdict.fresh, verdict.reason
    assert verdict.path == str(second) and "TABLE DATA for products, public.shops" in verdict.reason


def test_truncated_or_corrupt_dump_is_not_fresh(shop_db: psycopg.Connection, tmp_path: Path) -> None:
    good = _dump(shop_db, tmp_path)
    data = good.read_bytes()
    truncated = tmp_path / "pre_migration_20990101_0000.dump"
    truncated.write_bytes(data[: len(data) // 2])  # the TOC survives, the data blocks do not
    verdict = judge_backup(tmp_path, max_age=HOUR, log=LOG, must_contain=["products"])
    assert not verdict.fresh and verdict.path == str(truncated)
    assert "truncated or corrupt" in verdict.reason and str(truncated) in verdict.reason

    truncated.write_bytes(b"PGDMP" + b"\0" * 40)  # a header and nothing else
    verdict = judge_backup(tmp_path, max_age=HOUR, log=LOG)
    assert not verdict.fresh and "pg_restore --list cannot read" in verdict.reason

    truncated.unlink()
    assert judge_backup(tmp_path, max_age=HOUR, log=LOG, must_contain=["products"]).fresh


def test_dump_lacking_a_required_table_is_not_fresh(shop_db: psycopg.Connection, tmp_path: Path) -> None:
    _dump(shop_db, tmp_path)
    shop_db.execute("CREATE TABLE orders (id int)")  # created after the backup
    verdict = judge_backup(tmp_path, max_age=HOUR, log=LOG, must_contain=["products", "public.orders"])
    assert not verdict.fresh and verdict.missing == ["public.orders"]
    assert "no TABLE DATA for public.orders" in verdict.reason


def test_old_dump_is_not_fresh(shop_db: psycopg.Connection, tmp_path: Path) -> None:
    path = _dump(shop_db, tmp_path)
    two_hours_ago = (dt.datetime.now(dt.UTC) - 2 * HOUR).timestamp()
    os.utime(path, (two_hours_ago, two_hours_ago))
    verdict = judge_backup(tmp_path, max_age=HOUR, log=LOG)
    assert not verdict.fresh and verdict.path == str(path) and "more than max_age 1:00:00" in verdict.reason
    assert judge_backup(tmp_path, max_age=3 * HOUR, log=LOG).fresh


def test_no_backup_missing_directory_and_unreadable_file(tmp_path: Path, shop_db: psycopg.Connection) -> None:
    verdict = judge_backup(tmp_path, max_age=HOUR, log=LOG)
    assert not verdict.fresh and verdict.path is None and "no file matching" in verdict.reason

    missing = tmp_path / "nowhere"
    with pytest.raises(BackupDirectoryError, match=re.escape(str(missing))):
        judge_backup(missing, max_age=HOUR, log=LOG)
    with pytest.raises(BackupDirectoryError, match=re.escape(str(missing))):
        _dump(shop_db, missing)

    dangling = tmp_path / "pre_migration_20990101_0000.dump"
    dangling.symlink_to(tmp_path / "gone.dump")
    with pytest.raises(BackupFileError, match=re.escape(str(dangling))):
        judge_backup(tmp_path, max_age=HOUR, log=LOG)
    dangling.unlink()

    if os.geteuid() != 0:  # root reads mode-000 files anyway
        locked = tmp_path / "pre_migration_20990101_0001.dump"
        locked.write_bytes(b"PGDMP")
        locked.chmod(0)
        with pytest.raises(BackupFileError, match=re.escape(str(locked))):
            judge_backup(tmp_path, max_age=HOUR, log=LOG)


@pytest.fixture
def secret_role(pg_conn: psycopg.Connection) -> Iterator[tuple[str, str]]:
    """A login role with a password (cluster-wide, so uniquely named and dropped afterwards)."""
    role, password = f"expand_backup_{uuid.uuid4().hex[:8]}", f"s3cr:et\\{uuid.uuid4().hex}"
    pg_conn.execute(
        sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)
        )
    )
    yield role, password
    pg_conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_password_travels_in_a_passfile_never_in_argv_env_or_log(
    shop_db: psycopg.Connection,
    secret_role: tuple[str, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    role, password = secret_role
    base, major = _target(shop_db)
    target = PgTarget(params={**base.params, "user": role}, password=password)
    assert password not in repr(target)
    monkeypatch.setenv("PGPASSWORD", "stale-worker-password")  # must not leak into the tool
    with client_env(target) as env:
        assert "PGPASSWORD" not in env and not any(password in v for v in env.values())
        passfile = Path(env["PGPASSFILE"])
        assert passfile.stat().st_mode & 0o777 == 0o600
        # libpq itself reads the passfile back (with ':' and '\' escaped) for this host and user
        for key in [k for k in os.environ if k.startswith("PG")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            if key.startswith("PG"):
                monkeypatch.setenv(key, value)
        with psycopg.connect("") as conn:
            assert conn.info.user == role and conn.info.password == password
    assert not passfile.exists()

    with caplog.at_level(logging.INFO, logger=LOG.name):
        path = Path(dump_database(target, tmp_path, log=LOG, server_major=major))
    commands = [r.getMessage() for r in caplog.records if r.getMessage().startswith("running: ")]
    assert any("pg_dump --format=custom --no-password" in c for c in commands), commands
    assert password not in caplog.text and role in caplog.text
    assert judge_backup(tmp_path, max_age=HOUR, log=LOG, must_contain=["products"]).path == str(path)


def test_restore_refuses_without_confirmation_and_restores_with_it(
    shop_db: psycopg.Connection, tmp_path: Path
) -> None:
    path = _dump(shop_db, tmp_path)
    shop_db.execute("UPDATE products SET title = 'damaged'")
    shop_db.execute("DROP TABLE products")
    shop_db.execute("CREATE TABLE products (id int)")
    target, major = _target(shop_db)

    with pytest.raises(RestoreRefusedError, match=rf"into database '{target.dbname}'.*'postgres' must equal"):
        restore_dump(target, path, confirm="postgres", log=LOG, server_major=major)
    assert shop_db.execute("SELECT count(*) FROM products").fetchone() == (0,)  # nothing touched

    with pytest.raises(BackupFileError, match=r"nope\.dump"):
        restore_dump(target, tmp_path / "nope.dump", confirm=target.dbname, log=LOG, server_major=major)

    restore_dump(target, path, confirm=target.dbname, log=LOG, server_major=major)
    rows = shop_db.execute("SELECT count(*), count(*) FILTER (WHERE title LIKE 'title %') FROM products")
    assert rows.fetchone() == (5000, 5000)
    assert shop_db.execute("SELECT count(*) FROM shops").fetchone() == (2,)


def test_restore_of_a_truncated_dump_touches_nothing(shop_db: psycopg.Connection, tmp_path: Path) -> None:
    path = _dump(shop_db, tmp_path)
    path.write_bytes(path.read_bytes()[:-200])
    shop_db.execute("DELETE FROM products WHERE id > 10")
    target, major = _target(shop_db)
    with pytest.raises(PgToolError, match="pg_restore failed for backup file"):
        restore_dump(target, path, confirm=target.dbname, log=LOG, server_major=major)
    assert shop_db.execute("SELECT count(*) FROM products").fetchone() == (10,)


def test_tools_match_the_server_major(shop_db: psycopg.Connection, tmp_path: Path) -> None:
    major = shop_db.info.server_version // 10000
    pg_dump = resolve_tool("pg_dump", server_major=major)
    assert tool_major_version(str(pg_dump)) == major
    with pytest.raises(PgToolError, match=re.escape(str(tmp_path))):
        resolve_tool("pg_dump", bin_dir=tmp_path)
    with pytest.raises(PgToolError, match="older than the PostgreSQL 99 server"):
        resolve_tool("pg_dump", server_major=99)
    assert shutil.which("pg_restore") or resolve_tool("pg_restore")


def test_target_from_dsn_keeps_the_password_apart() -> None:
    target = PgTarget.from_dsn("postgresql://app:pa%3Ass@db.internal:6432/shop?sslmode=require")
    assert target.password == "pa:ss" and target.dbname == "shop"
    assert dict(target.params) == {
        "user": "app",
        "host": "db.internal",
        "port": "6432",
        "dbname": "shop",
        "sslmode": "require",
    }
    assert "pa:ss" not in repr(target) and target.describe() == "app@db.internal:6432/shop"
    with client_env(target) as env:
        assert (env["PGHOST"], env["PGPORT"], env["PGSSLMODE"]) == ("db.internal", "6432", "require")
        assert Path(env["PGPASSFILE"]).read_text() == "*:*:*:*:pa\\:ss\n"


LISTING = """;
; Archive created at 2025-01-02 03:04:05 UTC
;     dbname: shop
;
; Selected TOC Entries:
;
5; 2615 2200 SCHEMA - public pg_database_owner
214; 1259 16504 TABLE public products app
3344; 0 16504 TABLE DATA public products app
3345; 0 16511 TABLE DATA sales order lines app
3346; 0 0 SEQUENCE SET public products_id_seq app
3201; 2606 16510 CONSTRAINT public products products_pkey app
3202; 2606 16512 FK CONSTRAINT public products products_shop_id_fkey app
"""


def test_parse_toc_reads_kinds_schemas_and_names() -> None:
    entries = parse_toc(LISTING)
    assert [(e.dump_id, e.desc) for e in entries] == [
        (5, "SCHEMA"),
        (214, "TABLE"),
        (3344, "TABLE DATA"),
        (3345, "TABLE DATA"),
        (3346, "SEQUENCE SET"),
        (3201, "CONSTRAINT"),
        (3202, "FK CONSTRAINT"),
    ]
    data = entries[3]
    assert (data.schema, data.name, data.owner) == ("sales", "order lines", "app")
    assert entries[6].name == "products products_shop_id_fkey"
    assert missing_tables(entries, ["products", "public.products", "sales.order lines", "shops"]) == ["shops"]
