"""Fixtures of the fault matrix: reference schemas made once per session from a clean database, one
:class:`Scenario` per cell, and the hooks that record each cell's outcome and write the matrix."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from psycopg import sql

from airflow_provider_expand.engine.statements import parse_statements
from tests.dags.harness import EXAMPLE, seed_demo
from tests.failures.executor import execution_api
from tests.failures.invariants import schema_dump
from tests.failures.matrix import CELLS, Cell, write_if_asked
from tests.failures.scenario import ROWS, Env, Scenario

_STARTED = time.perf_counter()
INDEX_SQL = "CREATE INDEX CONCURRENTLY idx_products_name ON products (name) WHERE deleted_at IS NULL"


def _apply(conn: psycopg.Connection, file: str) -> None:
    text = (EXAMPLE / file).read_text()
    for statement in parse_statements(text, file):
        conn.execute(statement.sql)


@pytest.fixture(scope="session")
def references(pg_server_dsn: str) -> Iterator[dict[str, str]]:
    """The four shapes a run may leave: pre, expand, expand with the index, contract (from the real files)."""
    name = f"expand_ref_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = psycopg.conninfo.make_conninfo(pg_server_dsn, dbname=name)
    try:
        refs: dict[str, str] = {}
        with psycopg.connect(dsn, autocommit=True) as conn:
            seed_demo(conn, 0)
            refs["pre"] = schema_dump(dsn)
            _apply(conn, "expand.sql")
            refs["expand"] = schema_dump(dsn)
            conn.execute(INDEX_SQL)
            refs["expand+index"] = schema_dump(dsn)
            _apply(conn, "contract.sql")
            refs["contract"] = schema_dump(dsn)
        assert len(set(refs.values())) == 4, "two reference schemas are the same"
        yield refs
    finally:
        with psycopg.connect(pg_server_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def _execution_api_server(airflow_home: Path) -> Iterator[dict[str, str]]:
    with execution_api(airflow_home) as settings:
        yield settings


@pytest.fixture
def executor_api(_execution_api_server: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The Execution API the LocalExecutor's supervisors need (started once, for the kill cells only),
    and this test's Airflow settings pointing at it."""
    for key, value in _execution_api_server.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def env(
    tmp_path: Path,
    airflow_home: Path,
    airflow_conn: dict[str, str],
    pg_dsn: str,
    pg_conn: psycopg.Connection,
    redis_client: redis.Redis,
    redis_prefix: str,
    references: dict[str, str],
) -> Env:
    shops = seed_demo(pg_conn, ROWS)
    return Env(tmp_path, airflow_home, pg_dsn, pg_conn, redis_client, redis_prefix, shops, references)


@pytest.fixture
def scenario(env: Env, request: pytest.FixtureRequest) -> Callable[..., Scenario]:
    """``scenario(task, fault, expected, kind, **spec overrides)``: a cell, recorded for the matrix."""

    def make(task: str, fault: str, expected: str, kind: str, **kwargs: Any) -> Scenario:
        marker = request.node.get_closest_marker("xfail")
        cell = Cell(task, fault, expected, kind, needs=str(marker.kwargs.get("reason", "")) if marker else "")
        CELLS.append(cell)
        request.node.fault_cell = cell
        return Scenario(env, cell, **kwargs)

    return make


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    cell: Cell | None = getattr(item, "fault_cell", None)
    if cell is None or report.when != "call":
        return report
    cell.seconds = report.duration
    if hasattr(report, "wasxfail"):
        cell.outcome = "xpass" if report.passed else "xfail"
    else:
        cell.outcome = report.outcome
    if call.excinfo is not None:
        cell.error = str(call.excinfo.value).splitlines()[0][:200] if str(call.excinfo.value) else ""
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = write_if_asked(time.perf_counter() - _STARTED)
    if path is not None:
        print(f"\nfault matrix written to {path}")
