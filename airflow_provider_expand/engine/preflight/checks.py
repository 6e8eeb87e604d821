"""The runbook's pre-migration checks: long transactions, server version, connections, load, disk.

A long transaction makes DDL queue the application behind its lock and stalls ``CREATE INDEX
CONCURRENTLY``; a full disk or a saturated server is better discovered before the migration than halfway.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
import redis

from airflow_provider_expand.engine.database import Connector
from airflow_provider_expand.engine.errors import DefinitiveError, ServiceUnavailableError
from airflow_provider_expand.engine.preflight.pooler import PoolerFinding, probe_pooler, refusal_message
from airflow_provider_expand.engine.redact import query_text

MIN_SERVER_VERSION = 120000
# PostgreSQL 14.0 to 14.3 could corrupt indexes built with CREATE/REINDEX ... CONCURRENTLY (fixed in 14.4).
CIC_CORRUPTION_VERSIONS = range(140000, 140004)
QUERY_PREVIEW = 200

LONG_TRANSACTIONS_SQL = """
SELECT pid, clock_timestamp() - xact_start AS age, state, left(query, %(preview)s) AS query,
       usename, application_name
  FROM pg_stat_activity
 WHERE datname = current_database()
   AND pid <> pg_backend_pid()
   AND backend_type = 'client backend'
   AND state IS DISTINCT FROM 'idle'
   AND xact_start IS NOT NULL
   AND clock_timestamp() - xact_start > %(max_age)s
 ORDER BY xact_start
"""


class PreflightError(DefinitiveError):
    """A pre-migration check says the migration must not start (a retry would find the same)."""


class UnsupportedServerError(PreflightError):
    """The PostgreSQL server is older than the engine supports."""


class ConnectionHeadroomError(PreflightError):
    """Too few free connections are left for the migration and the application."""


class BackupSpaceError(PreflightError):
    """The backup directory cannot hold a backup of the database."""


class TransactionPoolingError(PreflightError):
    """A pooler in transaction or statement mode sits between the engine and PostgreSQL."""


class RedisUnavailableError(ServiceUnavailableError):
    """Redis did not answer ``INFO clients``: transient, the retry policy tries again."""


@dataclass(frozen=True)
class LongTransaction:
    """A non-idle transaction older than the limit, as ``pg_stat_activity`` shows it."""

    pid: int
    age: dt.timedelta
    state: str | None
    query: str
    usename: str | None = None
    application_name: str | None = None

    def describe(self) -> str:
        query = query_text(self.query, QUERY_PREVIEW)
        return (
            f"pid {self.pid} ({self.usename or '?'}, {self.application_name or 'no application_name'}) "
            f"in transaction for {self.age}, state {self.state}: {query}"
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe form, for trigger events."""
        return {
            "pid": self.pid,
            "age_seconds": self.age.total_seconds(),
            "state": self.state,
            "query": self.query,
            "usename": self.usename,
            "application_name": self.application_name,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LongTransaction:
        return cls(
            pid=int(data["pid"]),
            age=dt.timedelta(seconds=float(data["age_seconds"])),
            state=data.get("state"),
            query=str(data.get("query") or ""),
            usename=data.get("usename"),
            application_name=data.get("application_name"),
        )


def long_transaction_params(max_age: dt.timedelta) -> dict[str, Any]:
    """The bound values of :data:`LONG_TRANSACTIONS_SQL` (shared with the async trigger)."""
    return {"preview": QUERY_PREVIEW, "max_age": max_age}


def long_transactions(conn: psycopg.Connection[Any], max_age: dt.timedelta) -> list[LongTransaction]:
    """Non-idle transactions of other client backends in this database older than ``max_age``."""
    conn.execute("SELECT pg_stat_clear_snapshot()")  # a fresh view even inside a transaction
    rows = conn.execute(LONG_TRANSACTIONS_SQL, long_transaction_params(max_age)).fetchall()
    return [LongTransaction(*row) for row in rows]


async def along_transactions(
    conn: psycopg.AsyncConnection[Any], max_age: dt.timedelta
) -> list[LongTransaction]:
    """:func:`long_transactions` on an async connection (the deferrable wait in the triggerer)."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    cur = await conn.execute(LONG_TRANSACTIONS_SQL, long_transaction_params(max_age))
    return [LongTransaction(*row) for row in await cur.fetchall()]


def long_transactions_timeout_message(
    transactions: Sequence[LongTransaction], max_age: dt.timedelta, wait: dt.timedelta
) -> str:
    """Why the wait failed, naming each transaction that is still too old."""
    lines = "\n".join(f"  - {tx.describe()}" for tx in transactions)
    return (
        f"{len(transactions)} transaction(s) still older than {max_age} after waiting {wait}; "
        f"end them (or wait for a quieter moment) before migrating:\n{lines}"
    )


def log_long_transactions(
    transactions: Sequence[LongTransaction], max_age: dt.timedelta, log: logging.Logger
) -> None:
    if not transactions:
        log.info("no non-idle transaction older than %s", max_age)
        return
    log.warning("%d transaction(s) older than %s; waiting for them:", len(transactions), max_age)
    for tx in transactions:
        log.warning("  %s", tx.describe())


@dataclass(frozen=True)
class ServerVersion:
    num: int
    text: str

    @property
    def major(self) -> int:
        return self.num // 10000


def check_server_version(conn: psycopg.Connection[Any], log: logging.Logger) -> ServerVersion:
    """Refuse servers older than 12; warn on 14.0-14.3, whose concurrent index builds could corrupt."""
    row = conn.execute("SHOW server_version").fetchone()
    assert row is not None
    version = ServerVersion(conn.info.server_version, str(row[0]))
    judge_server_version(version, log, where=f"{conn.info.host}:{conn.info.port}")
    return version


def judge_server_version(version: ServerVersion, log: logging.Logger, *, where: str = "") -> None:
    """The version rule on its own, so it can be checked for versions no test server runs."""
    at = f" on {where}" if where else ""
    if version.num < MIN_SERVER_VERSION:
        raise UnsupportedServerError(f"PostgreSQL {version.text}{at} is too old: 12 or newer is required")
    if version.num in CIC_CORRUPTION_VERSIONS:
        log.warning(
            "server version: PostgreSQL %s%s; 14.0 to 14.3 can corrupt indexes built CONCURRENTLY: "
            "upgrade to 14.4 or later before building indexes",
            version.text,
            at,
        )
    else:
        log.info("server version: PostgreSQL %s%s (ok, >= 12)", version.text, at)


@dataclass(frozen=True)
class ConnectionHeadroom:
    used: int
    max_connections: int
    reserved: int

    @property
    def usable(self) -> int:
        return self.max_connections - self.reserved

    @property
    def ratio(self) -> float:
        return self.used / self.usable if self.usable > 0 else 1.0


def check_connection_headroom(
    conn: psycopg.Connection[Any],
    log: logging.Logger,
    *,
    warn_at: float = 0.80,
    fail_at: float = 0.95,
) -> ConnectionHeadroom:
    """Client connections in use (whole server) against ``max_connections`` minus the reserved slots."""
    row = conn.execute(
        """
        SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
               current_setting('max_connections')::int,
               current_setting('superuser_reserved_connections')::int
               + coalesce(current_setting('reserved_connections', true)::int, 0)
        """
    ).fetchone()
    assert row is not None
    headroom = ConnectionHeadroom(int(row[0]), int(row[1]), int(row[2]))
    line = (
        f"connection headroom: {headroom.used} of {headroom.usable} usable connections in use "
        f"({headroom.ratio:.0%}; max_connections {headroom.max_connections}, {headroom.reserved} reserved), "
        f"{headroom.usable - headroom.used} free"
    )
    if headroom.ratio >= fail_at:
        raise ConnectionHeadroomError(f"{line}: at or above the fail threshold {fail_at:.0%}")
    if headroom.ratio >= warn_at:
        log.warning("%s: at or above the warn threshold %.0f%%", line, warn_at * 100)
    else:
        log.info("%s (warn at %.0f%%, fail at %.0f%%)", line, warn_at * 100, fail_at * 100)
    return headroom


class DiskUsage(NamedTuple):
    total: int
    used: int
    free: int


@dataclass(frozen=True)
class MachineLoad:
    """``uptime``, ``free -h`` and ``df -h`` of the machine the task runs on."""

    load: tuple[float, float, float]
    cpus: int
    mem_total: int | None
    mem_available: int | None
    disks: dict[str, DiskUsage] = field(default_factory=dict)


def _meminfo(path: Path = Path("/proc/meminfo")) -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        text = path.read_text()
    except OSError:
        return values
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return values


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def machine_load(paths: Sequence[str | Path], log: logging.Logger) -> MachineLoad:
    """Log and return load average, memory and disk usage of ``paths`` (those that exist)."""
    mem = _meminfo()
    disks = {str(p): DiskUsage(*shutil.disk_usage(p)) for p in paths if Path(p).exists()}
    load = MachineLoad(
        os.getloadavg(), os.cpu_count() or 1, mem.get("MemTotal"), mem.get("MemAvailable"), disks
    )
    log.info("machine load: %.2f %.2f %.2f (1/5/15 min) on %d CPUs", *load.load, load.cpus)
    if load.mem_total is not None and load.mem_available is not None:
        log.info("memory: %s available of %s", _gib(load.mem_available), _gib(load.mem_total))
    for path, usage in disks.items():
        log.info(
            "disk %s: %s free of %s (%.0f%% used)",
            path,
            _gib(usage.free),
            _gib(usage.total),
            100 * usage.used / usage.total,
        )
    return load


def check_pooler(conn: psycopg.Connection[Any], connect: Connector, log: logging.Logger) -> PoolerFinding:
    """Refuse a transaction or statement pooler in front of the server (see :mod:`.pooler`)."""
    finding = probe_pooler(conn, connect, log)
    if finding.mode is not None:
        raise TransactionPoolingError(refusal_message(finding, conn))
    if finding.proxied:
        log.info(
            "pooler: a proxy is in between but each connection keeps its own backend (session pooling: ok)"
        )
    else:
        log.info("pooler: none, a direct connection to PostgreSQL (ok)")
    return finding


@dataclass(frozen=True)
class RedisClients:
    connected: int
    blocked: int


def redis_clients(client: redis.Redis, *, name: str, log: logging.Logger) -> RedisClients:
    """``INFO clients`` of the queues' Redis; ``name`` (the conn id) is named if it does not answer."""
    try:
        info = client.info("clients")
    except redis.exceptions.RedisError as exc:
        raise RedisUnavailableError(f"Redis {name} does not answer INFO clients: {exc}") from exc
    clients = RedisClients(int(info.get("connected_clients", 0)), int(info.get("blocked_clients", 0)))
    log.info("redis %s: %d connected clients, %d blocked", name, clients.connected, clients.blocked)
    return clients


@dataclass(frozen=True)
class BackupSpace:
    directory: Path
    database_size: int
    needed: int
    free: int


def check_backup_space(
    conn: psycopg.Connection[Any], directory: str | Path, log: logging.Logger, *, margin: float = 0.10
) -> BackupSpace:
    """Refuse unless ``directory`` has room for the database's size plus ``margin`` (a fraction)."""
    folder = Path(directory)
    if not folder.is_dir():
        raise BackupSpaceError(f"backup directory {folder} does not exist or is not a directory")
    row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    assert row is not None
    size = int(row[0])
    needed = int(size * (1 + margin))
    free = shutil.disk_usage(folder).free
    space = BackupSpace(folder, size, needed, free)
    line = (
        f"backup directory {folder}: {_gib(free)} free, a backup needs up to {_gib(needed)} "
        f"(database {conn.info.dbname} is {_gib(size)} plus {margin:.0%} margin)"
    )
    if free < needed:
        raise BackupSpaceError(line + ": not enough space, the backup could not finish")
    log.info("%s", line)
    return space


@dataclass(frozen=True)
class PreflightReport:
    server: ServerVersion
    connections: ConnectionHeadroom
    machine: MachineLoad
    redis: RedisClients | None = None
    backup_space: BackupSpace | None = None
    pooler: PoolerFinding | None = None


def run_preflight(
    conn: psycopg.Connection[Any],
    log: logging.Logger,
    *,
    connect: Connector | None = None,
    backup_directory: str | Path | None = None,
    space_margin: float = 0.10,
    redis_client: redis.Redis | None = None,
    redis_name: str = "redis",
    connections_warn_at: float = 0.80,
    connections_fail_at: float = 0.95,
) -> PreflightReport:
    """Every check but the long-transaction wait, in the runbook's order; raises on a blocking finding.

    ``connect`` (a second connection to the same database) enables the pooler check, run first.
    """
    pooler = check_pooler(conn, connect, log) if connect is not None else None
    server = check_server_version(conn, log)
    headroom = check_connection_headroom(conn, log, warn_at=connections_warn_at, fail_at=connections_fail_at)
    paths: list[str | Path] = ["/"]
    if backup_directory is not None:
        paths.append(backup_directory)
    machine = machine_load(paths, log)
    clients = redis_clients(redis_client, name=redis_name, log=log) if redis_client is not None else None
    space = (
        check_backup_space(conn, backup_directory, log, margin=space_margin)
        if backup_directory is not None
        else None
    )
    return PreflightReport(server, headroom, machine, clients, space, pooler)
