"""A private PostgreSQL primary with a real streaming replica, for what the shared server cannot do.

The machine's server allows no replication connections and must not be reconfigured, so the health tests
(and ``benchmarks/backfill.py --replica``) ``initdb`` their own primary in a temporary directory, on a free
port, with ``host replication all 127.0.0.1/32 trust`` and archiving whose success a flag file decides, and
clone a hot standby from it with ``pg_basebackup -R -X stream``. Run as ``postgres`` when we are root
(initdb refuses root). Stopped by ``pg_ctl stop`` (the postmaster's own pid file), never by name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.ports import free_port

BIN = Path(os.environ.get("EXPAND_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str]) -> None:
    subprocess.run(_as_postgres(cmd), check=True, capture_output=True, text=True)


@dataclass
class Server:
    datadir: Path
    port: int

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        _run(
            [
                str(BIN / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-l",
                str(self.datadir / "server.log"),
                "-w",
                "start",
            ]
        )

    def stop(self) -> None:
        if (self.datadir / "postmaster.pid").exists():
            subprocess.run(
                _as_postgres([str(BIN / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop"]),
                capture_output=True,
            )


@dataclass
class Pair:
    """The primary (archiving while ``archive_ok`` exists) and its streaming replica."""

    primary: Server
    replica: Server
    archive_ok: Path

    def archiving(self, ok: bool) -> None:
        if ok:
            self.archive_ok.touch()
            os.chmod(self.archive_ok, 0o644)
        else:
            self.archive_ok.unlink(missing_ok=True)

    def wait_streaming(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.primary.dsn, autocommit=True) as conn:
            while time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
                ).fetchone()
                if row and row[0]:
                    return
                time.sleep(0.2)
        raise TimeoutError("the replica did not start streaming")


@contextmanager
def standalone(**settings: str) -> Iterator[Server]:
    """One private server with the packaged defaults (for benchmarks: no other session's WAL in its own)."""
    base = Path(tempfile.mkdtemp(prefix="expand-server-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    server = Server(base / "data", free_port())
    try:
        _run([str(BIN / "initdb"), "-A", "trust", "-U", "postgres", "-D", str(server.datadir)])
        conf = {
            "port": str(server.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{base}'",
        }
        with open(server.datadir / "postgresql.conf", "a") as f:
            f.writelines(f"{k} = {v}\n" for k, v in {**conf, **settings}.items())
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def primary_with_replica(**settings: str) -> Iterator[Pair]:
    """Start the pair (1 MB WAL segments, so archiving has segments to wait for); stop and delete it after."""
    base = Path(tempfile.mkdtemp(prefix="expand-pair-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    primary = Server(base / "primary", free_port())
    replica = Server(base / "replica", free_port())
    pair = Pair(primary, replica, base / "archive_ok")
    try:
        _run(
            [
                str(BIN / "initdb"),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--wal-segsize=1",
                "-D",
                str(primary.datadir),
            ]
        )
        conf = {
            "port": str(primary.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{base}'",
            "fsync": "off",
            "wal_level": "replica",
            "max_wal_senders": "5",
            "wal_keep_size": "'256MB'",
            "archive_mode": "on",
            "archive_command": f"'test -f {pair.archive_ok}'",
            "hot_standby": "on",
            "wal_receiver_status_interval": "1s",
            **settings,
        }
        with open(primary.datadir / "postgresql.conf", "a") as f:
            f.writelines(f"{k} = {v}\n" for k, v in conf.items())
        with open(primary.datadir / "pg_hba.conf", "a") as f:
            f.write("host replication all 127.0.0.1/32 trust\n")
        pair.archiving(True)
        primary.start()
        _run(
            [
                str(BIN / "pg_basebackup"),
                "-h",
                "127.0.0.1",
                "-p",
                str(primary.port),
                "-U",
                "postgres",
                "-D",
                str(replica.datadir),
                "-R",
                "-X",
                "stream",
            ]
        )
        with open(replica.datadir / "postgresql.conf", "a") as f:
            f.write(f"port = {replica.port}\n")
        replica.start()
        pair.wait_streaming()
        yield pair
    finally:
        replica.stop()
        primary.stop()
        shutil.rmtree(base, ignore_errors=True)
