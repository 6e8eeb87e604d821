"""Runs a migration DAG for real with ``dag.test()``: a copy of a migration folder, tuned for the test,
a DAG file in Airflow's dags folder that builds it, and the demo shop schema in the test's database.
"""

from __future__ import annotations

import email
import random
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

import psycopg
import yaml

from airflow_provider_expand.engine.statements import parse_statements

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "dags" / "migrations" / "products_title_to_name"
DEMO_SCHEMA = REPO / "tests" / "fixtures" / "demo_schema.sql"
WRITER_APP = "expand-test-writer"


def seed_demo(conn: psycopg.Connection, rows: int) -> list[uuid.UUID]:
    """The demo schema with two shops and ``rows`` products titled ``Product <id>``."""
    for statement in parse_statements(DEMO_SCHEMA.read_text(), "demo_schema.sql"):
        conn.execute(statement.sql)
    shops = [uuid.uuid4(), uuid.uuid4()]
    conn.execute(
        "INSERT INTO shops (id, domain) VALUES (%s, 'a.myshopify.com'), (%s, 'b.myshopify.com')", shops
    )
    conn.execute(
        "INSERT INTO products (shop_id, title, price)"
        " SELECT CASE WHEN g %% 2 = 0 THEN %s ELSE %s END::uuid, 'Product ' || g, (g %% 1000) / 10.0"
        " FROM generate_series(1, %s) g",
        (shops[0], shops[1], rows),
    )
    conn.execute("ANALYZE products")
    return shops


def copy_migration(tmp: Path, migration_id: str, **overrides: Any) -> Path:
    """The example migration under ``tmp/migrations/<id>`` with ``overrides`` applied to its YAML."""
    folder = tmp / "migrations" / migration_id
    shutil.copytree(EXAMPLE, folder)
    spec = yaml.safe_load((folder / "migration.yaml").read_text())
    spec["id"] = migration_id
    for key, value in overrides.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    (folder / "migration.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder


def install_dag_file(airflow_home: Path, migrations: Path, name: str) -> Path:
    """A DAG file in the configured dags folder (``dag.test()`` needs the DAG serialized from there)."""
    path = airflow_home / "dags" / f"{name}.py"
    path.write_text(
        "from airflow_provider_expand.dag_factory import build_migration_dags\n"
        f"globals().update(build_migration_dags({str(migrations)!r}, strict=True))\n"
    )
    return path


def run_dag(dag_file: Path, dag_id: str, conf: dict[str, Any] | None = None) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(dag_file))
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag(dag_id)
    assert dag is not None, f"{dag_id} not in {list(bag.dags)}"
    return dag.test(run_conf=conf or {}, logical_date=None)


def states(dag_run: Any) -> dict[str, str]:
    return {
        (ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"): str(ti.state)
        for ti in dag_run.get_task_instances()
    }


@dataclass
class Writer:
    """The application meanwhile: old code writes ``title``; once the contract dropped it, new code writes
    ``name``. It remembers the last value it committed for each row, and its slowest statement."""

    dsn: str
    shops: list[uuid.UUID]
    max_id: int
    expected: dict[int, str] = field(default_factory=dict)
    slowest: float = 0.0
    statements: int = 0
    errors: list[str] = field(default_factory=list)
    reconnects: int = 0
    tag: str = "w"  # prefixes the values written, so two writers on one table never write the same value
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Writer:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=30)

    def _run(self) -> None:
        rng = random.Random(7)
        column = "title"
        conn = self._connect()
        try:
            while not self._stop.is_set():
                value = f"{self.tag}{self.statements}-{rng.randrange(10**6)}"
                started = time.perf_counter()
                target: int | None = None
                try:
                    if rng.random() < 0.2:
                        # the new code writes price_cents itself; for the old code the trigger does
                        cents = ", price_cents" if column == "name" else ""
                        row = conn.execute(
                            f"INSERT INTO products (shop_id, {column}, price{cents})"
                            f" VALUES (%s, %s, 9.99{', 999' if cents else ''}) RETURNING id",
                            (rng.choice(self.shops), value),
                        ).fetchone()
                        assert row is not None
                        self.expected[int(row[0])] = value
                    else:
                        target = rng.randrange(1, self.max_id + 1)
                        done = conn.execute(
                            f"UPDATE products SET {column} = %s WHERE id = %s", (value, target)
                        ).rowcount
                        if done:
                            self.expected[target] = value
                except psycopg.errors.UndefinedColumn:
                    column = "name"  # the contract dropped title: the new code writes name
                    continue
                except psycopg.OperationalError as exc:
                    if not conn.closed and not conn.broken:
                        self.errors.append(str(exc))
                        continue
                    # the connection was terminated (a failover, a test's fault): reconnect, and learn
                    # from the table whether the statement in flight committed before the cut
                    self.reconnects += 1
                    conn = self._connect()
                    column = self._resolve(conn, column, value, target)
                    continue
                except psycopg.Error as exc:  # any other error is a finding of the test
                    self.errors.append(str(exc))
                    continue
                finally:
                    self.slowest = max(self.slowest, time.perf_counter() - started)
                self.statements += 1
                time.sleep(0.005)
        finally:
            conn.close()

    def _connect(self) -> psycopg.Connection:
        """An autocommit connection, retried for a while (the server may be cutting connections)."""
        deadline = time.monotonic() + 30
        while True:
            try:
                return psycopg.connect(self.dsn, autocommit=True, application_name=WRITER_APP)
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _resolve(self, conn: psycopg.Connection, column: str, value: str, target: int | None) -> str:
        """Record the value in flight when the lost statement did commit; returns the column to write."""
        try:
            rows = conn.execute(f"SELECT id FROM products WHERE {column} = %s", (value,)).fetchall()
        except psycopg.errors.UndefinedColumn:
            return "name"
        for (product_id,) in rows:
            if target is None or int(product_id) == target:
                self.expected[int(product_id)] = value
        return column


def seed_bullmq_queue(client: Any, prefix: str, name: str = "sync", jobs: int = 3) -> None:
    """A BullMQ 5 queue as the library leaves it: meta with its version, jobs waiting (no worker runs here;
    tests/test_bullmq_worker.py covers pause and drain against a real Node worker)."""
    client.hset(f"{prefix}:{name}:meta", mapping={"version": "bullmq:5.81.5", "opts.maxLenEvents": "10000"})
    for job_id in range(1, jobs + 1):
        client.hset(
            f"{prefix}:{name}:{job_id}", mapping={"name": "sync-shop", "data": "{}", "timestamp": "0"}
        )
        client.lpush(f"{prefix}:{name}:wait", str(job_id))
    client.set(f"{prefix}:{name}:id", str(jobs))


class Inbox:
    """What a real SMTP server (aiosmtpd) on loopback received."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"

    def subjects(self) -> list[str]:
        return [str(m["Subject"]) for m in self.messages]

    def body(self, subject_part: str) -> str:
        for m in self.messages:
            if subject_part in str(m["Subject"]):
                parts = [p for p in m.walk() if p.get_content_type() == "text/html"]
                return "\n".join(str(p.get_payload(decode=True), "utf-8") for p in parts)  # type: ignore[arg-type]
        raise AssertionError(f"no mail with {subject_part!r} in {self.subjects()}")
