"""Backfill speed and what it costs the application: plain UPDATE vs the runbook's DO block vs the engine.

Run by hand (not by pytest)::

    .venv/bin/python benchmarks/backfill.py --repeat 3 --replica

Without ``--dsn`` it starts a private server (``initdb`` in a temporary directory, PostgreSQL's packaged
defaults), so the WAL it measures is its own and not that of other sessions on a shared server; with
``--replica`` it also runs the plain UPDATE and the spec defaults on a private primary with a streaming
replica, the replica gate set low so that it holds. It builds one template database with ``--rows``
products (columns named as in the runbook's 'Pasul 5', so its DO block runs exactly as written), then for
every variant and repetition clones a fresh database from it (``CREATE DATABASE ... TEMPLATE``: the same
starting state, byte for byte), runs the variant while a writer thread updates single random rows, checks
the result and prints markdown tables of medians: time, the writer's p99 and max, the table's growth
(without and with its indexes), its bloat (its size over the size of the same rows packed by a
``VACUUM FULL`` afterwards: what a filled column must add, since every row gets longer, is not bloat), WAL
written and the HOT share of the row updates.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import logging
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from airflow_provider_expand.engine.backfill.run import BackfillResult, BackfillSpec, run_backfill
from airflow_provider_expand.engine.database import connector_from_dsn
from airflow_provider_expand.engine.health.settings import HealthSettings
from airflow_provider_expand.spec.sizes import parse_size

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.private_cluster import primary_with_replica, standalone

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
    growth: list[float] = field(default_factory=list)
    growth_all: list[float] = field(default_factory=list)  # with the indexes
    packed: list[float] = field(
        default_factory=list
    )  # the same rows after a VACUUM FULL, over the size before
    wal: list[int] = field(default_factory=list)
    hot: list[float] = field(default_factory=list)
    held: list[float] = field(default_factory=list)
    results: list[BackfillResult] = field(default_factory=list)


def _plain(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(PLAIN_UPDATE)


def _do_block(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.add_notice_handler(lambda _notice: None)
        conn.execute(RUNBOOK_DO_BLOCK)


def _engine(
    partitions: int,
    health: HealthSettings,
    batch_size: int = 10_000,
    target: dt.timedelta | None = None,
    pause: dt.timedelta | None = None,
    into: list[BackfillResult] | None = None,
) -> Callable[[str], None]:
    """``run_backfill`` as the operator calls it; only the given knobs differ from the spec's defaults."""
    knobs: dict[str, object] = {"batch_size": batch_size}
    if target is not None:
        knobs["target_batch_time"] = target
    if pause is not None:
        knobs["pause"] = pause
    spec = BackfillSpec(table="products", set=SET, where=WHERE, partitions=partitions, **knobs)  # type: ignore[arg-type]

    def run(dsn: str) -> None:
        errors: list[BaseException] = []

        def one(part: int) -> None:
            try:
                result = run_backfill(
                    connector_from_dsn(dsn),
                    spec,
                    migration_id="bench",
                    partition=part,
                    log=logging.getLogger(f"backfill.{part}"),
                    health=health,
                )
                if into is not None:
                    into.append(result)
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


def _table_state(dsn: str) -> tuple[tuple[int, int], int, int, int]:
    """products' size (pg_table_size: heap, TOAST, maps; not its indexes), the server's WAL position, and its update / HOT update counts."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_table_size('products'), pg_total_relation_size('products'), pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint,"
            " n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relid = 'products'::regclass"
        ).fetchone()
    assert row is not None
    return (int(row[0]), int(row[1])), int(row[2]), int(row[3]), int(row[4])


def _packed_size(dsn: str) -> int:
    """products' size once its rows are packed again (``VACUUM FULL``): the floor any way of filling the
    column leaves, since the column makes every row longer; read after everything else was measured."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM FULL products")
        row = conn.execute("SELECT pg_table_size('products')").fetchone()
    assert row is not None
    return int(row[0])


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
        size_before, lsn_before, upd_before, hot_before = _table_state(run_dsn)
        writer = Writer(run_dsn, rows, interval)
        writer.start()
        writer.ready.wait(10)
        time.sleep(0.5)  # the writer's steady state before the variant starts
        started = time.perf_counter()
        results_before = len(variant.results)
        try:
            variant.run(run_dsn)
        finally:
            ended = time.perf_counter()
            writer.stop.set()
            writer.join(60)
        seconds = ended - started
        _check(run_dsn, rows)
        time.sleep(1.2)  # every backend has flushed its statistics
        size_after, lsn_after, upd_after, hot_after = _table_state(run_dsn)
        lat = writer.latencies(started, ended)
        variant.seconds.append(seconds)
        variant.p99.append(lat[int(0.99 * (len(lat) - 1))])
        variant.worst.append(lat[-1])
        variant.statements.append(len(lat))
        variant.growth.append(size_after[0] / size_before[0])
        variant.growth_all.append(size_after[1] / size_before[1])
        variant.packed.append(_packed_size(run_dsn) / size_before[0])
        variant.wal.append(lsn_after - lsn_before)
        variant.hot.append((hot_after - hot_before) / max(upd_after - upd_before, 1))
        variant.held.append(sum(r.held_seconds for r in variant.results[results_before:]))
        print(
            f"  {variant.name}: {seconds:.2f} s, {rows / seconds:,.0f} rows/s, writer p99 "
            f"{variant.p99[-1] * 1000:.1f} ms, max {variant.worst[-1] * 1000:.1f} ms ({len(lat)} statements), "
            f"growth {variant.growth[-1]:.2f}x ({variant.growth_all[-1]:.2f}x; packed {variant.packed[-1]:.2f}x), WAL {variant.wal[-1] / 2**20:.0f} MB, HOT {variant.hot[-1]:.0%}, "
            f"held {variant.held[-1]:.1f} s",
            file=sys.stderr,
            flush=True,
        )
    finally:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _table(variants: list[Variant], rows: int) -> str:
    """Medians over the repetitions; the ratios to (a) from the medians and, for time, also per repetition
    (each repetition runs every variant back to back, so its ratios share the machine's mood)."""
    plain = variants[0]
    lines = [
        "| variant | settings | time (s) | vs plain UPDATE | per repetition | writer p99 (ms) | writer max (ms) "
        "| writer max, worst run (ms) | growth | with indexes | packed | bloat | WAL (MB) | WAL vs plain | WAL bytes/row "
        "| HOT | held (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    med = statistics.median
    for v in variants:
        seconds = med(v.seconds)
        ratios = [p / s for p, s in zip(plain.seconds, v.seconds, strict=True)]
        lines.append(
            f"| {v.name} | {v.settings} | {seconds:.2f} | {med(plain.seconds) / seconds:.2f}x | "
            f"{min(ratios):.2f}-{max(ratios):.2f}x | {med(v.p99) * 1000:.1f} | {med(v.worst) * 1000:.1f} | "
            f"{max(v.worst) * 1000:.1f} | {med(v.growth):.2f}x | {med(v.growth_all):.2f}x | {med(v.packed):.2f}x | "
            f"{med(g / p for g, p in zip(v.growth, v.packed, strict=True)):.2f}x | {med(v.wal) / 2**20:.0f} | "
            f"{med(v.wal) / med(plain.wal):.2f}x | {med(v.wal) / rows:.0f} | {med(v.hot):.0%} | {med(v.held):.1f} |"
        )
    return "\n".join(lines)


def _run_all(dsn: str, variants: list[Variant], rows: int, repeat: int, interval: float) -> None:
    template = f"expand_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        version = admin.execute("SHOW server_version").fetchone()
        print(
            f"building {rows:,} rows in {template} (PostgreSQL {version[0] if version else '?'})",
            file=sys.stderr,
        )
        try:
            _make_template(admin, dsn, template, rows)
            for repetition in range(repeat):
                print(f"repetition {repetition + 1} of {repeat}", file=sys.stderr)
                for variant in variants:
                    _measure(admin, dsn, template, variant, rows, interval)
        finally:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(template)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="a server to use (a maintenance DB); default: a private one")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="repetitions; the table shows medians")
    parser.add_argument(
        "--writer-interval", type=float, default=0.005, help="seconds between writer statements"
    )
    parser.add_argument("--tuned-target-ms", type=int, default=100, help="the tuned run's target_batch_time")
    parser.add_argument("--replica", action="store_true", help="also run on a primary with a replica")
    parser.add_argument("--replica-lag", default="16MB", help="max_replica_lag of the replica run")
    parser.add_argument(
        "--replica-delay", default="1s", help="the replica's recovery_min_apply_delay: a replica that lags"
    )
    parser.add_argument("--skip", default="", help="comma-separated variant names to leave out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    defaults = HealthSettings()
    tuned = f"batch 10,000 adapting to {args.tuned_target_ms} ms, no VACUUM, 1 partition"
    variants = [
        Variant("(a) plain UPDATE", "one statement", _plain),
        Variant(
            "(b) runbook DO block",
            "'Pasul 5' verbatim: 10,000 rows, pg_sleep(0.1), one transaction",
            _do_block,
        ),
        Variant("(c) engine, spec defaults", "table, set, where only; 1 partition", _plain),
        Variant("(d) engine, spec defaults, 2 partitions", "partitions: 2", _plain),
        Variant("(e) engine, spec defaults but vacuum: false", "health: {vacuum: false}", _plain),
        Variant("(f) engine, tuned for speed", tuned, _plain),
    ]
    variants[2].run = _engine(1, defaults, into=variants[2].results)
    variants[3].run = _engine(2, defaults, into=variants[3].results)
    variants[4].run = _engine(1, dataclasses.replace(defaults, vacuum=False), into=variants[4].results)
    variants[5].run = _engine(
        1,
        dataclasses.replace(defaults, vacuum=False),
        target=dt.timedelta(milliseconds=args.tuned_target_ms),
        into=variants[5].results,
    )
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    variants = [variants[0]] + [v for v in variants[1:] if not any(s in v.name for s in skip)]
    if args.dsn:
        _run_all(args.dsn, variants, args.rows, args.repeat, args.writer_interval)
    else:
        with standalone() as server:
            _run_all(server.dsn, variants, args.rows, args.repeat, args.writer_interval)
    print(_table(variants, args.rows))
    if args.replica:
        lag = parse_size(args.replica_lag)
        gated = Variant(
            "(h) engine, spec defaults, replica gate holding",
            f"max_replica_lag: {args.replica_lag}; the replica applies commits {args.replica_delay} late",
            _plain,
        )
        gated.run = _engine(1, dataclasses.replace(defaults, max_replica_lag_bytes=lag), into=gated.results)
        plain = Variant("(a) plain UPDATE, with the lagging replica", "one statement", _plain)
        free = Variant("(g) engine, spec defaults, replica gate off", "max_replica_lag: off", _plain)
        free.run = _engine(1, dataclasses.replace(defaults, max_replica_lag_bytes=None), into=free.results)
        pair_variants = [plain, free, gated]
        delay = f"'{args.replica_delay}'"
        with primary_with_replica(fsync="on", recovery_min_apply_delay=delay) as pair:
            _run_all(pair.primary.dsn, pair_variants, args.rows, args.repeat, args.writer_interval)
        print()
        print(_table(pair_variants, args.rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
