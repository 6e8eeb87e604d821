"""Running an operations plan's phases on a real database, for the duplicated-column operations' tests.

Expand, contract and rollback groups run as the DDL runner runs them (one transaction per group,
autocommit for ``CONCURRENTLY``); the backfill and the index builds go through the real engines.
"""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, LiteralString

import psycopg

from airflow_provider_expand.engine.backfill.plan import BackfillSpec
from airflow_provider_expand.engine.backfill.run import run_backfill
from airflow_provider_expand.engine.database import connector_from_dsn
from airflow_provider_expand.engine.index.build import build_index
from airflow_provider_expand.engine.index.spec import IndexSpec
from airflow_provider_expand.engine.operations.base import PlanContext
from airflow_provider_expand.engine.operations.execute import lint_plan
from airflow_provider_expand.engine.operations.plan import Group, MigrationPlan
from airflow_provider_expand.engine.operations.planner import build_operations, plan_migration
from airflow_provider_expand.engine.operations.schema import read_schema
from airflow_provider_expand.spec.operations import parse_operations
from tests.pg_versions import pg_dump_for, unnamed_not_null

LOG = logging.getLogger("tests.operations")


def plan(dsn: str, migration_id: str, operations: list[dict[str, Any]]) -> MigrationPlan:
    """The plan of ``operations`` (pgroll's list) against the database as it is now."""
    ctx = PlanContext(migration_id=migration_id)
    ops = build_operations(parse_operations(operations), ctx)
    with psycopg.connect(dsn) as conn:
        schema = read_schema(conn)
    migration = plan_migration(ops, schema, ctx)
    # the generated SQL passes the lint hand-written SQL must pass (warnings, such as an integer column
    # the operation asked for, are logged by the phase tasks and do not stop them)
    errors = [f for f in lint_plan(migration) if f.severity == "error"]
    assert not errors, "\n".join(map(str, errors))
    return migration


def apply(dsn: str, groups: Sequence[Group]) -> None:
    for group in groups:
        with psycopg.connect(dsn, autocommit=group.autocommit) as conn:
            for statement in group.statements:
                conn.execute(statement)


def backfill(dsn: str, migration: MigrationPlan) -> None:
    """Every backfill of the plan through the batched engine (small batches, so it takes several)."""
    for step in migration.backfills:
        spec = BackfillSpec(
            table=f"public.{step.physical}",
            set=step.set,
            where=step.where,
            key=step.key,
            batch_size=2,
            target_batch_time=None,
            pause=dt.timedelta(0),
        )
        run_backfill(connector_from_dsn(dsn), spec, migration_id=migration.migration_id, log=LOG)


def indexes(dsn: str, migration: MigrationPlan) -> None:
    for build in migration.indexes:
        spec = IndexSpec(
            name=build.name,
            table=build.table,
            columns=build.columns,
            where=build.where,
            unique=build.unique,
            using=build.using,
        )
        build_index(connector_from_dsn(dsn), spec, migration_id=migration.migration_id, log=LOG)


def run_to_soak(dsn: str, migration: MigrationPlan) -> None:
    apply(dsn, migration.expand)
    backfill(dsn, migration)
    indexes(dsn, migration)


def dump(dsn: str, *schemas: str) -> str:
    """``pg_dump -s`` without comments, settings and blank lines: what two schemas are compared by.

    Without ``schemas``: every schema but the ledger's (the engines create it on first use)."""
    only = [f"--schema={s}" for s in schemas] or ["--exclude-schema=airflow_expand"]
    args = [str(pg_dump_for(dsn)), "-s", "--no-owner", "--no-privileges", *only, dsn]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    keep = [
        line
        for line in out.splitlines()
        if line.strip()
        and not line.startswith("--")
        and not line.startswith("SET ")
        and "set_config" not in line
        and not line.startswith("\\")
    ]
    return unnamed_not_null("\n".join(keep))


@contextmanager
def versions(dsn: str, migration: MigrationPlan) -> Iterator[tuple[psycopg.Connection, psycopg.Connection]]:
    """An old-code session (the tables) and a new-code session (``search_path`` = the version schema)."""
    with psycopg.connect(dsn, autocommit=True) as old, psycopg.connect(dsn, autocommit=True) as new:
        new.execute(f'SET search_path = "{migration.version_schema}"')
        yield old, new


def together(*writers: Callable[[], object]) -> None:
    """Run the writers at the same time (one thread each); re-raise the first failure."""
    failures: list[BaseException] = []

    def run(writer: Callable[[], object]) -> None:
        try:
            writer()
        except BaseException as exc:  # handed to the test thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if failures:
        raise failures[0]


def reference(pg_server_dsn: str, statements: str) -> str:
    """The ``public`` dump of a fresh database built by hand-written ``statements``."""
    import uuid

    from psycopg import sql

    name = f"expand_ref_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = psycopg.conninfo.make_conninfo(pg_server_dsn, dbname=name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(statements)
        return dump(dsn, "public")
    finally:
        with psycopg.connect(pg_server_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def write_together(
    dsn: str, migration: MigrationPlan, old_sql: LiteralString, new_sql: LiteralString, ids: range
) -> None:
    """Old code (the tables) and new code (the views) each run their statement once per id, at the same time;
    new code's ids are ``ids`` shifted by 100000."""
    with versions(dsn, migration) as (old, new):
        together(
            lambda: [old.execute(old_sql, (i,)) for i in ids],
            lambda: [new.execute(new_sql, (i + 100000,)) for i in ids],
        )


def rollback_then_contract(
    dsn: str,
    pg_server_dsn: str,
    migration_id: str,
    operations: list[dict[str, Any]],
    during_soak: Callable[[MigrationPlan], None],
    expected: str,
) -> MigrationPlan:
    """The life of one migration twice: expand (+ backfill, indexes) then rollback, which must restore the
    ``pg_dump -s`` of before; then expand again, ``during_soak`` (both versions writing), the contract, and
    the ``public`` schema must equal the reference built by the hand-written ``expected``."""
    before = dump(dsn)
    migration = plan(dsn, migration_id, operations)
    run_to_soak(dsn, migration)
    assert dump(dsn) != before
    apply(dsn, migration.rollback)
    assert dump(dsn) == before, "rollback did not restore the schema"
    migration = plan(dsn, migration_id, operations)
    run_to_soak(dsn, migration)
    during_soak(migration)
    apply(dsn, migration.contract)
    got, want = dump(dsn, "public"), reference(pg_server_dsn, expected)
    assert got == want, f"schema after contract:\n{got}\n\nreference:\n{want}"
    return migration
