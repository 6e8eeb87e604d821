"""What the DAG tests of pgroll-style operations share: the migration folder, the two code versions writing
while ``dag.test()`` runs (old code on the tables, new code with ``search_path`` = the version schema), and
the checks of a completed or a rolled-back migration."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

from airflow_provider_expand.engine.ledger.store import Ledger
from tests.dags.harness import install_dag_file, run_dag, states
from tests.engine.operations.conftest import build, dump_schema


@pytest.fixture
def migration_id() -> str:
    """A fresh id per test: it names the DAG, the ledger row and the version schema."""
    return f"ops_e2e_{uuid.uuid4().hex[:8]}"


def write_migration(tmp: Path, migration_id: str, operations: list[dict[str, Any]], **extra: Any) -> Path:
    """``tmp/migrations/<id>/migration.yaml`` with ``operations``, a short soak and no retries."""
    folder = tmp / "migrations" / migration_id
    folder.mkdir(parents=True)
    spec = {
        "id": migration_id,
        "postgres_conn_id": "app_db",
        "lock_timeout": "500ms",
        "retries": 0,
        "soak": "2s",
        "operations": operations,
        **extra,
    }
    (folder / "migration.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder


def install_migration(
    tmp: Path, airflow_home: Path, migration_id: str, operations: list[dict[str, Any]], **extra: Any
) -> Path:
    """The migration's folder and the DAG file that builds it; returns the DAG file."""
    folder = write_migration(tmp, migration_id, operations, **extra)
    return install_dag_file(airflow_home, folder.parent, migration_id)


class Writer(threading.Thread):
    """One code version running ``statements`` (name -> SQL, ``%(i)s`` the round's number) in rounds until
    stopped. Old code (``new_code=False``) uses the tables until the contract removes what it writes;
    new code waits for the version schema, then uses it. The first row each statement returns is kept."""

    def __init__(self, dsn: str, migration_id: str, statements: Mapping[str, str], *, new_code: bool) -> None:
        super().__init__(daemon=True)
        self.dsn, self.migration_id, self.statements, self.new_code = dsn, migration_id, statements, new_code
        self.stop = threading.Event()
        self.rows: dict[str, list[tuple[Any, ...]]] = {name: [] for name in statements}
        self.errors: list[str] = []
        self.gone = False

    def ids(self, name: str) -> list[int]:
        """The first column of what ``name`` returned (the ids of an ``INSERT ... RETURNING id``)."""
        return [int(row[0]) for row in self.rows[name]]

    def run(self) -> None:
        try:
            self._write()
        except Exception as exc:  # a writer that died is a finding too, not only a warning of pytest's
            self.errors.append(f"writer died: {exc!r}")
            raise

    def _write(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            i = 0
            while not self.stop.is_set() and not self.gone:
                if self.new_code and not self._on_version_schema(conn):
                    time.sleep(0.05)  # the expand has not created the views yet
                    continue
                i += 1
                try:
                    for name, statement in self.statements.items():
                        cur = conn.execute(statement, {"i": i})
                        row = cur.fetchone() if cur.description else None
                        if row is not None:
                            self.rows[name].append(tuple(row))
                except psycopg.Error as exc:
                    if not self.new_code and self._contracting():
                        self.gone = True  # the contract ended the old code's schema: it is gone by then
                    else:
                        self.errors.append(str(exc))
                time.sleep(0.01)

    def _on_version_schema(self, conn: psycopg.Connection) -> bool:
        found = conn.execute("SELECT to_regnamespace(%s)", (self.migration_id,)).fetchone()
        if not found or found[0] is None:
            return False
        conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(self.migration_id)))
        return True

    def _contracting(self) -> bool:
        try:
            return ledger_phase(self.dsn, self.migration_id) in ("contracting", "completed")
        except psycopg.errors.UndefinedTable:  # before begin created the ledger
            return False


def run_with_writers(dag_file: Path, migration_id: str, *writers: Writer) -> Any:
    """``dag.test()`` of the migration with ``writers`` writing from before the expand to its end."""
    for writer in writers:
        writer.start()
    try:
        return run_dag(dag_file, migration_id)
    finally:
        for writer in writers:
            writer.stop.set()
        for writer in writers:
            writer.join(10)


def migrate_with_both_writing(
    tmp: Path,
    airflow_home: Path,
    dsn: str,
    migration_id: str,
    before: str,
    operations: list[dict[str, Any]],
    old_code: Mapping[str, str],
    new_code: Mapping[str, str],
) -> tuple[dict[str, str], Writer, Writer]:
    """Build ``before``, then run the migration to its end with an old-code and a new-code writer; asserts
    it succeeded and that neither writer got an error. Returns the task states and the two writers."""
    build(dsn, before)
    dag_file = install_migration(tmp, airflow_home, migration_id, operations)
    old = Writer(dsn, migration_id, old_code, new_code=False)
    new = Writer(dsn, migration_id, new_code, new_code=True)
    run = run_with_writers(dag_file, migration_id, old, new)
    result = states(run)
    assert str(run.state) == "success", result
    assert not old.errors and not new.errors, (old.errors[:3], new.errors[:3])
    return result, old, new


def ledger_phase(dsn: str, migration_id: str) -> str | None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        record = Ledger().get(conn, migration_id)
    return None if record is None else record.phase


def fail_after_expand(
    tmp: Path, airflow_home: Path, dsn: str, migration_id: str, before: str, operations: list[dict[str, Any]]
) -> None:
    """Build ``before``, run the migration with a verify after the expand that fails, and check the run
    rolled back to exactly that schema, version schema and triggers gone, the ledger's phase ``rolled_back``."""
    build(dsn, before)
    schema = dump_schema(dsn)
    dag_file = install_migration(tmp, airflow_home, migration_id, operations, verify=[INJECTED_FAILURE])
    run = run_dag(dag_file, migration_id)
    result = states(run)
    assert str(run.state) == "failed", result
    assert result["expand"] == "success" and result["rollback"] == "success", result
    assert result["contract"] == "upstream_failed", result
    assert dump_schema(dsn) == schema
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT to_regnamespace(%s)", (migration_id,)).fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal").fetchone() == (0,)
    assert ledger_phase(dsn, migration_id) == "rolled_back"


INJECTED_FAILURE = {"name": "injected failure", "sql": "SELECT 1", "expect": 2, "after": "expand"}
