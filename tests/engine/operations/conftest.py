"""Operations on a real PostgreSQL: a migration's phases run through the engine (DDL runner, backfill engine,
index builder, ledger), the schema compared with ``pg_dump -s`` of a hand-written reference, and writers of
both code versions (old: the tables; new: ``search_path`` = the version schema)."""

from __future__ import annotations

import logging
import re
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

from airflow_provider_expand.engine.backfill.run import BackfillSpec, run_backfill
from airflow_provider_expand.engine.database import Connector, connector_from_dsn
from airflow_provider_expand.engine.ddl.runner import DDLPolicy
from airflow_provider_expand.engine.index.build import build_index
from airflow_provider_expand.engine.index.spec import IndexSpec
from airflow_provider_expand.engine.ledger.store import Ledger
from airflow_provider_expand.engine.operations.base import PlanContext
from airflow_provider_expand.engine.operations.phases import migration_plan, run_operations_phase
from airflow_provider_expand.engine.operations.plan import MigrationPlan
from airflow_provider_expand.spec.operations import parse_operations
from tests.pg_versions import pg_dump_for, unnamed_not_null

LOG = logging.getLogger("tests.operations")
POLICY = DDLPolicy(
    lock_timeout=timedelta(milliseconds=200),
    retries=5,
    backoff_base=timedelta(milliseconds=20),
    backoff_max=timedelta(milliseconds=100),
)
LEDGER = "airflow_expand"


def _with_dbname(dsn: str, dbname: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**{k: v for k, v in params.items() if v is not None})


@contextmanager
def fresh_database(server_dsn: str) -> Iterator[str]:
    """A database of its own on the test server, dropped afterwards."""
    name = f"expand_ref_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_dbname(server_dsn, name)
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def reference_dsn(pg_server_dsn: str) -> Iterator[str]:
    """A second fresh database: where the hand-written reference schema is built."""
    with fresh_database(pg_server_dsn) as dsn:
        yield dsn


def dump_schema(dsn: str) -> str:
    """``pg_dump -s -n public`` without the lines that differ between two databases of the same schema,
    its statements sorted (pg_dump orders some objects by OID, i.e. by creation order)."""
    out = subprocess.run(
        [str(pg_dump_for(dsn)), "--schema-only", "--no-owner", "--no-privileges", "-n", "public", "-d", dsn],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    lines = [
        line
        for line in out.splitlines()
        if line.strip()
        and not line.startswith("--")
        and not re.match(r"^(SET|SELECT pg_catalog|\\restrict|\\unrestrict)", line)
    ]
    statements = unnamed_not_null("\n".join(lines)).split(";\n")
    return ";\n".join(sorted(s.strip() for s in statements))


def build(dsn: str, sql_text: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql_text)  # type: ignore[arg-type]


@dataclass
class Migration:
    """One migration of ``operations`` run phase by phase on ``dsn`` through the engine."""

    dsn: str
    operations: list[dict[str, Any]]
    migration_id: str = "m1"

    @classmethod
    def of(cls, dsn: str, text: str, migration_id: str = "m1") -> Migration:
        return cls(dsn, yaml.safe_load(text), migration_id)

    @property
    def connect(self) -> Connector:
        return connector_from_dsn(self.dsn)

    @property
    def ctx(self) -> PlanContext:
        return PlanContext(migration_id=self.migration_id)

    def entries(self) -> list[Any]:
        return parse_operations(self.operations)

    def plan(self) -> MigrationPlan:
        # the snapshot once the expand took it, the catalog before
        plan = migration_plan(self.connect, self.entries(), self.ctx, ledger_schema=LEDGER, dry_run=True)
        assert plan is not None
        return plan

    def phase(self, phase: str) -> dict[str, Any]:
        return run_operations_phase(
            self.connect,
            self.entries(),
            self.ctx,
            phase,  # type: ignore[arg-type]
            policy=POLICY,
            ledger_schema=LEDGER,
            log=LOG,
        )

    def expand(self) -> None:
        self.phase("expand")

    def backfill(self) -> None:
        for fill in self.plan().backfills:
            run_backfill(
                self.connect,
                BackfillSpec(
                    table=fill.physical, set=fill.set, where=fill.where, batch_size=100, pause=timedelta(0)
                ),
                migration_id=self.migration_id,
                log=LOG,
                ledger=Ledger(LEDGER),
            )

    def indexes(self) -> None:
        for index in self.plan().indexes:
            build_index(
                self.connect,
                IndexSpec(index.name, index.table, index.columns, index.where, index.unique, index.using),
                migration_id=self.migration_id,
                log=LOG,
            )

    def contract(self) -> None:
        self.phase("contract")

    def rollback(self) -> None:
        self.phase("rollback")

    def run(self) -> None:
        """Every phase up to and including the contract, as the DAG runs them."""
        self.expand()
        self.backfill()
        self.indexes()
        self.contract()


def new_code(dsn: str, migration_id: str = "m1") -> psycopg.Connection:
    """A session of the new code: ``search_path`` set to the migration's version schema."""
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(migration_id)))
    return conn


def old_code(dsn: str) -> psycopg.Connection:
    """A session of the old code: the tables, through the default ``search_path``."""
    return psycopg.connect(dsn, autocommit=True)


def rows(conn: psycopg.Connection, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with closing(conn.cursor()) as cur:
        return cur.execute(query, args or None).fetchall()  # type: ignore[arg-type]


def check_contract_matches(
    pg_dsn: str, reference_dsn: str, before: str, operations: str, after: str
) -> Migration:
    """``before`` + the operations' expand, backfill, indexes and contract == ``after`` written by hand."""
    build(pg_dsn, before)
    migration = Migration.of(pg_dsn, operations)
    migration.run()
    build(reference_dsn, after)
    assert dump_schema(pg_dsn) == dump_schema(reference_dsn)
    return migration


def check_rollback_restores(pg_dsn: str, reference_dsn: str, before: str, operations: str) -> Migration:
    """``before`` + expand (+ backfill and indexes) + rollback == ``before``, version schema gone too."""
    build(pg_dsn, before)
    build(reference_dsn, before)
    migration = Migration.of(pg_dsn, operations)
    migration.expand()
    migration.backfill()
    migration.indexes()
    migration.rollback()
    assert dump_schema(pg_dsn) == dump_schema(reference_dsn)
    with old_code(pg_dsn) as conn:
        assert rows(conn, "SELECT count(*) FROM pg_namespace WHERE nspname = %s", migration.migration_id) == [
            (0,)
        ]
    return migration
