"""What the health tests share: the products table, a log that other threads write to, a backfill thread."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from airflow_provider_expand.engine.backfill.run import BackfillResult, BackfillSpec, run_backfill
from airflow_provider_expand.engine.database import connector_from_dsn

SPEC = BackfillSpec(
    table="products",
    set="name = title",
    where="name IS NULL AND title IS NOT NULL",
    batch_size=2_000,
    target_batch_time=dt.timedelta(milliseconds=50),
)
# fixed batches with a pause: at least 2.5 s for 50,000 rows however fast the machine is, so a gate that is
# read every 0.5 s (a rate over seconds, a replica's lag) has batches left to hold
PACED = dataclasses.replace(
    SPEC, batch_size=1_000, target_batch_time=None, pause=dt.timedelta(milliseconds=50)
)


def make_products(conn: psycopg.Connection, rows: int) -> None:
    conn.execute(
        "CREATE TABLE products (id bigint PRIMARY KEY, title text, name text, hits int NOT NULL DEFAULT 0)"
    )
    conn.execute(
        "INSERT INTO products (id, title) SELECT g, 'title ' || g FROM generate_series(1, %s) g", (rows,)
    )
    conn.execute("VACUUM ANALYZE products")


def undone(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM products WHERE name IS DISTINCT FROM title").fetchone()
    assert row is not None
    return int(row[0])


class Lines(logging.Handler):
    """Every message of one logger, from any thread."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[tuple[int, str]] = []
        self.log = logging.getLogger(name)
        self.log.setLevel(logging.DEBUG)
        self.log.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append((record.levelno, record.getMessage()))

    def matching(self, text: str, level: int | None = None) -> list[str]:
        return [m for lv, m in self.messages if text in m and (level is None or lv == level)]

    def wait_for(self, text: str, timeout: float) -> float:
        """Seconds until a line containing ``text`` appeared; raises if none did within ``timeout``."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.matching(text):
                return time.monotonic() - started
            time.sleep(0.05)
        raise AssertionError(f"no log line with {text!r} within {timeout} s: {self.messages[-5:]}")

    def close(self) -> None:
        self.log.removeHandler(self)
        super().close()


class Backfill(threading.Thread):
    """``run_backfill`` in a thread; ``result`` or ``error`` when it is done."""

    def __init__(self, dsn: str, log: logging.Logger, **kwargs: Any) -> None:
        super().__init__(daemon=True)
        self.dsn, self.logger, self.kwargs = dsn, log, kwargs
        self.result: BackfillResult | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = run_backfill(
                connector_from_dsn(self.dsn),
                self.kwargs.pop("spec", SPEC),
                migration_id="m",
                log=self.logger,
                **self.kwargs,
            )
        except BaseException as exc:
            self.error = exc


def rows_done(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM products WHERE name IS NOT NULL").fetchone()
    assert row is not None
    return int(row[0])


def hold_noted(dsn: str) -> list[str]:
    """What the ledger says holds the running backfill steps (Ledger.note_hold)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT error FROM airflow_expand.steps WHERE status = 'running' AND error IS NOT NULL"
        ).fetchall()
    return [str(r[0]) for r in rows]


def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout} s")
