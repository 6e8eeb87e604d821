"""Backfill speed and what it costs the application: plain UPDATE vs the runbook's DO block vs the engine.

Run by hand (not by pytest), against a PostgreSQL you may create databases on::

    .venv/bin/python benchmarks/backfill.py --dsn postgresql://postgres@127.0.0.1:5432/postgres

It builds one template database with ``--rows`` products (columns named as in the runbook's 'Pasul 5',
so its DO block runs exactly as written), then for every variant and repetition clones a fresh database
from it (``CREATE DATABASE ... TEMPLATE``: the same starting state, byte for byte), runs the variant while
a writer thread updates single random rows, checks the result and prints a markdown table of medians.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import os
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from airflow_provider_expand.engine.backfill.run import BackfillSpec, run_backfill
from airflow_provider_expand.engine.database import connector_from_dsn

SET = "new_column = old_column"
WHERE = "new_column IS NULL AND old_column IS NOT NULL"
PLAIN_UPDATE = f"UPDATE products SET {SET} WHERE {WHERE}"
# The runbook's 'Pasul 5' batch loop, verbatim.
RUNBOOK_DO_BLOCK = """
DO $$
DECLARE
  batch_size INT := 10000;
  affected INT;
BEGIN
  LOOP
    WITH batch AS (
      SELECT id FROM products
      WHERE new_column IS NULL AND old_column IS NOT NULL
      LIMIT batch_size
      FOR UPDATE SKIP LOCKED
    )
    UPDATE products p
    SET new_column = p.old_column
    FROM batch b
    WHERE p.id = b.id;

    GET DIAGNOSTICS affected = ROW_COUNT;
    EXIT WHEN affected = 0;

    RAISE NOTICE 'Migrated % rows', affected;
    PERFORM pg_sleep(0.1); -- Pauză pentru a nu bloca
  END LOOP;
END $$;
"""


def _with_dbname(dsn: str, dbname: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**{k: v for k, v in params.items() if v is not None})


class Writer(threading.Thread):
    """The application: one connection updating single random rows, each statement timed."""

    def __init__(self, dsn: str, rows: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.dsn, self.rows, self.interval = dsn, rows, interval
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.timings: list[tuple[float, float]] = []  # (started, seconds) of each statement

    def latencies(self, start: float, end: float) -> list[float]:
        """Sorted durations of the statements that started while the variant ran."""
        return sorted(seconds for started, seconds in self.timings if start <= started <= end)

    def run(self) -> None:
        rng = random.Random(42)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            self.ready.set()
            while not self.stop.is_set():
                started = time.perf_counter()
                conn.execute(
                    "UPDATE products SET price = price + 1 WHERE id = %s", (rng.randint(1, self.rows),)
                )
                self.timings.append((started, time.perf_counter() - started))
                time.sleep(self.interval)


@dataclass
class Variant:
    name: str
    settings: str
    run: Callable[[str], None]
    seconds: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    worst: list[float] = field(default_factory=list)
    statements: list[int] = field(default_factory=list)


def _plain(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(PLAIN_UPDATE)


def _do_block(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.add_notice_handler(lambda _notice: None)
        conn.execute(RUNBOOK_DO_BLOCK)


def _engine(
    partitions: int, batch_size: int, target: dt.timedelta, pause: dt.timedelta
) -> Callable[[str], None]:
    spec = BackfillSpec(
        table="products",
        set=SET,
        where=WHERE,
        batch_size=batch_size,
        target_batch_time=target,
        pause=pause,
        partitions=partitions,
    )

    def run(dsn: str) -> None:
        errors: list[BaseException] = []

        def one(part: int) -> None:
            try:
                run_backfill(
                    connector_from_dsn(dsn),
                    spec,
                    migration_id="bench",
                    partition=part,
                    log=logging.getLogger(f"backfill.{part}"),
                )
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(p,)) for p in range(partitions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    return run


def _make_template(admin: psycopg.Connection, dsn: str, name: str, rows: int) -> None:
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(_with_dbname(dsn, name), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE products (id bigint PRIMARY KEY, shop_id uuid NOT NULL, old_column text,"
            " new_column text, price numeric(10, 2) NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(
            "INSERT INTO products (id, shop_id, old_column, price) SELECT g, md5((g %% 100)::text)::uuid,"
            " 'product title ' || g, (g %% 1000) / 10.0 FROM generate_series(1, %s) g",
            (rows,),
        )
        conn.execute("VACUUM ANALYZE products")


def _check(dsn: str, rows: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            f"SELECT count(*) FILTER (WHERE {WHERE}), count(*) FILTER (WHERE new_column IS DISTINCT FROM old_column)"
            " FROM products"
        ).fetchone()
    if row != (0, 0):
        raise SystemExit(f"variant left rows undone: {row}")


def _checkpoint(admin: psycopg.Connection) -> None:
    """Start each variant with no dirty pages pending, so a checkpoint does not land on one of them."""
    with contextlib.suppress(psycopg.Error):
        admin.execute("CHECKPOINT")


def _measure(
    admin: psycopg.Connection, dsn: str, template: str, variant: Variant, rows: int, interval: float
) -> None:
    name = f"{template}_run"
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    admin.execute(
        sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
    )
    run_dsn = _with_dbname(dsn, name)
    try:
        _checkpoint(admin)
        writer = Writer(run_dsn, rows, interval)
        writer.start()
        writer.ready.wait(10)
        time.sleep(0.5)  # the writer's steady state before the variant starts
        started = time.perf_counter()
        try:
            variant.run(run_dsn)
        finally:
            ended = time.perf_counter()
            writer.stop.set()
            writer.join(60)
        seconds = ended - started
        _check(run_dsn, rows)
        lat = writer.latencies(started, ended)
        variant.seconds.append(seconds)
        variant.p99.append(lat[int(0.99 * (len(lat) - 1))])
        variant.worst.append(lat[-1])
        variant.statements.append(len(lat))
        print(
            f"  {variant.name}: {seconds:.2f} s, {rows / seconds:,.0f} rows/s, writer p99 "
            f"{variant.p99[-1] * 1000:.1f} ms, max {variant.worst[-1] * 1000:.1f} ms ({len(lat)} statements)",
            file=sys.stderr,
            flush=True,
        )
    finally:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _table(variants: list[Variant], rows: int) -> str:
    """Medians over the repetitions; the ratio to (a) both from the median times and per repetition
    (each repetition runs every variant back to back, so its ratios share the machine's mood)."""
    plain = variants[0].seconds
    lines = [
        "| variant | settings | time (s) | rows/s | vs plain UPDATE | per repetition | writer p99 (ms) "
        "| writer max (ms) | writer max, worst run (ms) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for v in variants:
        seconds = statistics.median(v.seconds)
        ratios = [p / s for p, s in zip(plain, v.seconds, strict=True)]
        lines.append(
            f"| {v.name} | {v.settings} | {seconds:.2f} | {rows / seconds:,.0f} | "
            f"{statistics.median(plain) / seconds:.2f}x | {min(ratios):.2f}-{max(ratios):.2f}x | "
            f"{statistics.median(v.p99) * 1000:.1f} | {statistics.median(v.worst) * 1000:.1f} | "
            f"{max(v.worst) * 1000:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dsn", default=os.environ.get("EXPAND_TEST_PG_DSN"), help="server to use (a maintenance DB)"
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="repetitions; the table shows medians")
    parser.add_argument(
        "--writer-interval", type=float, default=0.005, help="seconds between writer statements"
    )
    parser.add_argument("--batch-size", type=int, default=10_000, help="the engine's starting batch size")
    parser.add_argument("--target-ms", type=int, default=50, help="the engine's target_batch_time")
    parser.add_argument("--pause-ms", type=int, default=0, help="the engine's pause between batches")
    parser.add_argument("--skip", default="", help="comma-separated variant names to leave out")
    args = parser.parse_args(argv)
    if not args.dsn:
        parser.error("give --dsn or set EXPAND_TEST_PG_DSN")
    logging.basicConfig(level=logging.WARNING)
    target, pause = dt.timedelta(milliseconds=args.target_ms), dt.timedelta(milliseconds=args.pause_ms)
    tuned = f"batch {args.batch_size:,} adapting to {args.target_ms} ms, pause {args.pause_ms} ms"
    variants = [
        Variant("(a) plain UPDATE", "one statement", _plain),
        Variant(
            "(b) runbook DO block",
            "'Pasul 5' verbatim: 10,000 rows, pg_sleep(0.1), one transaction",
            _do_block,
        ),
        Variant("(c) engine, 1 partition", tuned, _engine(1, args.batch_size, target, pause)),
        Variant("(c) engine, 2 partitions", tuned, _engine(2, args.batch_size, target, pause)),
        Variant(
            "(c) engine, spec defaults",
            "batch 10,000 adapting to 500 ms, pause 100 ms, 1 partition",
            _engine(1, 10_000, dt.timedelta(milliseconds=500), dt.timedelta(milliseconds=100)),
        ),
    ]
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    variants = [variants[0]] + [v for v in variants[1:] if not any(s in v.name for s in skip)]
    template = f"expand_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.dsn, autocommit=True) as admin:
        version = admin.execute("SHOW server_version").fetchone()
        print(
            f"building {args.rows:,} rows in {template} (PostgreSQL {version[0] if version else '?'})",
            file=sys.stderr,
        )
        try:
            _make_template(admin, args.dsn, template, args.rows)
            for repetition in range(args.repeat):
                print(f"repetition {repetition + 1} of {args.repeat}", file=sys.stderr)
                for variant in variants:
                    _measure(admin, args.dsn, template, variant, args.rows, args.writer_interval)
        finally:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(template)))
    print(_table(variants, args.rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
