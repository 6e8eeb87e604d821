"""The pooler check against a real PgBouncer 1.18 in front of the test server, in each pool mode, and direct."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager

import psycopg
import pytest

from airflow_provider_expand.engine.database import Connector, backend_pid, connector_from_dsn
from airflow_provider_expand.engine.errors import (
    DatabaseUnavailableError,
    DefinitiveError,
    TransientError,
    translated,
)
from airflow_provider_expand.engine.preflight.checks import (
    PreflightError,
    TransactionPoolingError,
    run_preflight,
)
from airflow_provider_expand.engine.preflight.pooler import PoolerFinding, probe_pooler

LOG = logging.getLogger("test.pooler")
Start = Callable[..., str]


def _probe(dsn: str) -> PoolerFinding:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return probe_pooler(conn, connector_from_dsn(dsn), LOG)


def _server_address(pg_dsn: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(pg_dsn)
    return f"{params.get('host')}:{params.get('port') or 5432}"


def _backends(pg_conn: psycopg.Connection) -> int:
    """Other backends on the test database once the closed ones are gone (a backend exits just after)."""
    deadline = time.monotonic() + 5
    while True:
        row = pg_conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
        assert row is not None
        if row[0] == 0 or time.monotonic() > deadline:
            return int(row[0])
        time.sleep(0.05)


@contextmanager
def _churn(dsn: str, clients: int = 3) -> Iterator[Counter[str]]:
    """Other clients of the same pool running short transactions all along (an application under load)."""
    stop = threading.Event()
    done: Counter[str] = Counter()

    def work() -> None:
        with psycopg.connect(dsn, prepare_threshold=None) as conn:  # prepared statements break too
            while not stop.is_set():
                conn.execute("SELECT pg_backend_pid()")
                conn.commit()
                done["transactions"] += 1

    threads = [threading.Thread(target=work) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        yield done
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def test_a_direct_connection_passes_with_no_sign(
    pg_conn: psycopg.Connection, pg_connect: Connector, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=LOG.name):
        report = run_preflight(pg_conn, LOG, connect=pg_connect)
    assert report.pooler is not None
    assert (report.pooler.signs, report.pooler.mode, report.pooler.rounds) == ((), None, 12)
    assert "pooler: none, a direct connection to PostgreSQL (ok)" in caplog.text
    assert _backends(pg_conn) == 0  # the probe's second connection is closed


def test_transaction_pooling_is_refused_naming_the_fix(
    pgbouncer: Start, pg_dsn: str, pg_conn: psycopg.Connection
) -> None:
    dsn = pgbouncer("transaction")
    with psycopg.connect(dsn, autocommit=True) as conn, pytest.raises(TransactionPoolingError) as refused:
        run_preflight(conn, LOG, connect=connector_from_dsn(dsn))
    error = refused.value
    assert isinstance(error, PreflightError | DefinitiveError) and not isinstance(error, TransientError)
    message = str(error)
    assert "transaction pooling mode" in message
    assert "a second connection's transaction ran on backend" in message  # LIFO: proved in round 1
    assert "cancel key names backend" in message and "connected to port" in message
    assert (
        f"a direct connection to PostgreSQL: point the migration's Airflow connection at the server itself, not the pooler (e.g. {_server_address(pg_dsn)},"
        in message
    )
    assert "pool_mode = session) is fine" in message
    assert _probe(dsn).rounds == 1


@pytest.mark.parametrize("idle_servers", [2, 4])
def test_round_robin_server_order_is_proved_within_two_rounds(pgbouncer: Start, idle_servers: int) -> None:
    dsn = pgbouncer("transaction", server_round_robin=1)
    warm = [psycopg.connect(dsn) for _ in range(idle_servers)]  # each in a transaction: a server apiece
    for conn in warm:
        conn.execute("SELECT 1")
    for conn in warm:
        conn.close()
    finding = _probe(dsn)
    assert finding.mode == "transaction" and finding.rounds <= 2, finding


def test_statement_pooling_is_refused(pgbouncer: Start) -> None:
    finding = _probe(pgbouncer("statement"))
    assert (finding.mode, finding.rounds) == ("statement", 1)
    assert "transaction blocks not allowed in statement pooling mode" in str(finding.proof)


def test_session_pooling_passes_with_the_signs_logged(
    pgbouncer: Start, caplog: pytest.LogCaptureFixture
) -> None:
    dsn = pgbouncer("session")
    with (
        caplog.at_level(logging.INFO, logger=LOG.name),
        psycopg.connect(dsn, autocommit=True) as conn,
    ):
        report = run_preflight(conn, LOG, connect=connector_from_dsn(dsn))
    assert report.pooler is not None and report.pooler.mode is None and report.pooler.proxied
    assert "each connection keeps its own backend (session pooling: ok)" in caplog.text


@pytest.mark.parametrize("pool_mode", ["transaction", "session"])
@pytest.mark.one_pg_version("PgBouncer's pool under churn")
def test_verdict_holds_while_other_clients_churn_the_pool(pgbouncer: Start, pool_mode: str) -> None:
    """Under load, transaction pooling is still proved every time, and session pooling never refused."""
    dsn = pgbouncer(pool_mode, default_pool_size=4 if pool_mode == "transaction" else 8)
    with _churn(dsn) as load:
        findings = [_probe(dsn) for _ in range(30)]
    assert load["transactions"] > 0
    modes = Counter(f.mode for f in findings)
    rounds = Counter(f.rounds for f in findings)
    LOG.warning("%s under churn: verdicts %s, rounds %s", pool_mode, modes, rounds)
    assert modes == Counter({"transaction" if pool_mode == "transaction" else None: 30}), rounds


def test_a_probe_queued_behind_its_own_transaction_lets_go_and_still_proves_it(pgbouncer: Start) -> None:
    """Pool of 2: another client takes the server A just released, B takes the last one; A's next statement
    must wait for a server, so B gives its up after ``hold_wait`` instead of waiting on A forever."""
    dsn = pgbouncer("transaction", default_pool_size=2)
    squatter = psycopg.connect(dsn)

    def connect() -> psycopg.Connection:
        squatter.execute("SELECT 1")  # in a transaction on A's server, released by A a moment ago (LIFO)
        return psycopg.connect(dsn)

    with closing(squatter), psycopg.connect(dsn, autocommit=True) as conn:
        finding = probe_pooler(conn, connect, LOG, hold_wait=dt.timedelta(seconds=0.5))
    assert (finding.mode, finding.rounds) == ("transaction", 1)
    assert "after waiting 0:00:00.500000 for a server" in str(finding.proof), finding


def test_a_dropped_probe_connection_is_transient_and_leaves_nothing(
    pg_conn: psycopg.Connection, pg_dsn: str
) -> None:
    def connect() -> psycopg.Connection:
        other = psycopg.connect(pg_dsn)
        pg_conn.execute("SELECT pg_terminate_backend(%s)", (other.info.backend_pid,))
        return other

    with (
        psycopg.connect(pg_dsn, autocommit=True) as conn,
        pytest.raises(DatabaseUnavailableError, match="pooler probe"),
        translated("pooler probe"),
    ):
        probe_pooler(conn, connect, LOG)
    assert _backends(pg_conn) == 0


def test_the_probe_needs_an_autocommit_connection(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn, pytest.raises(ValueError, match="autocommit"):
        probe_pooler(conn, connector_from_dsn(pg_dsn), LOG)


def test_backend_pid_is_the_servers_even_behind_a_session_pooler(pgbouncer: Start) -> None:
    """The index monitor watches this pid: behind PgBouncer the cancel key's pid is made up."""
    with psycopg.connect(pgbouncer("session"), autocommit=True, application_name="pid-probe") as conn:
        row = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'pid-probe'").fetchone()
        assert row is not None
        assert backend_pid(conn) == row[0] != conn.info.backend_pid
