"""The demo shop: a multi-tenant products table under RLS, an application role, a BullMQ queue ``sync``,
and the application writing to it while the migration runs (the point of Expand/Contract).
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis

from airflow_provider_expand.engine.statements import parse_statements

SHOPS = 20
QUEUE = "sync"
QUEUE_PREFIX = "bull"


def load_schema(conn: psycopg.Connection, schema_file: Path) -> None:
    """Run the shop schema statement by statement (parsed with pglast, like every SQL file here)."""
    for statement in parse_statements(schema_file.read_text(encoding="utf-8"), str(schema_file)):
        conn.execute(statement.sql)


def seed_shop(conn: psycopg.Connection, schema_file: Path, rows: int, log: logging.Logger) -> int:
    """Shops and ``rows`` products spread over them; returns the highest product id."""
    started = time.perf_counter()
    load_schema(conn, schema_file)
    conn.execute(
        "INSERT INTO shops (domain) SELECT 'shop-' || g || '.myshopify.com' FROM generate_series(1, %s) g",
        (SHOPS,),
    )
    conn.execute(
        "INSERT INTO products (shop_id, title, price, deleted_at)"
        " SELECT s.ids[1 + g %% array_length(s.ids, 1)], 'Product ' || g, (g %% 10000) / 100.0,"
        "        CASE WHEN g %% 50 = 0 THEN now() END"
        " FROM generate_series(1, %s) g, (SELECT array_agg(id ORDER BY domain) AS ids FROM shops) s",
        (rows,),
    )
    conn.execute("ANALYZE shops, products")
    log.info("Seeded %d shops and %d products in %.1f s", SHOPS, rows, time.perf_counter() - started)
    return rows


def seed_queue(client: redis.Redis, jobs: int, log: logging.Logger) -> None:
    """A BullMQ 5 queue ``sync`` as the library leaves it, with ``jobs`` waiting (re-created each run)."""
    for key in client.scan_iter(match=f"{QUEUE_PREFIX}:{QUEUE}:*", count=1000):
        client.delete(key)
    base = f"{QUEUE_PREFIX}:{QUEUE}"
    client.hset(f"{base}:meta", mapping={"version": "bullmq:5.81.5", "opts.maxLenEvents": "10000"})
    now_ms = str(int(time.time() * 1000))
    for job_id in range(1, jobs + 1):
        client.hset(
            f"{base}:{job_id}",
            mapping={"name": "sync-shop", "data": f'{{"shop": {job_id}}}', "timestamp": now_ms},
        )
        client.lpush(f"{base}:wait", str(job_id))
    client.set(f"{base}:id", str(jobs))
    log.info("Seeded BullMQ queue %s with %d waiting jobs", base, jobs)


@dataclass
class AppWriter:
    """The application meanwhile: the old code updates ``title``; after the contract dropped it, the new
    code updates ``name``. Records its slowest statement: a migration that blocks the app shows up here."""

    dsn: str
    max_id: int
    statements: int = 0
    errors: int = 0
    slowest: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> AppWriter:
        self._thread = threading.Thread(target=self._run, name="demo-app-writer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        rng = random.Random(1)
        column = "title"
        with psycopg.connect(self.dsn, autocommit=True, application_name="demo-app") as conn:
            while not self._stop.wait(0.02):
                started = time.perf_counter()
                try:
                    conn.execute(
                        f"UPDATE products SET {column} = %s WHERE id = %s",  # column is one of two literals
                        (f"Product {uuid.uuid4().hex[:8]}", rng.randrange(1, self.max_id + 1)),
                    )
                except psycopg.errors.UndefinedColumn:
                    column = "name"  # the contract dropped title: from now on only the new code runs
                    continue
                except psycopg.Error:
                    self.errors += 1
                    continue
                self.slowest = max(self.slowest, time.perf_counter() - started)
                self.statements += 1
