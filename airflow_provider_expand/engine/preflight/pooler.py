"""Does each client connection keep one PostgreSQL backend for its life, or does a pooler share backends?

The engine relies on session state: session advisory locks (one per migration, one per index), session
``SET``s (``lock_timeout``, ``application_name``), the backend pid the index monitor watches, and psycopg's
prepared statements. A pooler in transaction mode (PgBouncer ``pool_mode = transaction``) hands each
transaction whichever server connection is free, so all four silently break; statement mode also refuses
transaction blocks. Session pooling keeps one backend per client and is fine.

Detection, in two parts, from the outside (no pooler admin console needed):

1. *Signs* of something in between, on the preflight's own connection: the pid in the cancel key libpq got
   at connect time (``conn.info.backend_pid``) is not the backend's ``pg_backend_pid()`` (a pooler answers
   the startup itself and makes up its own key), or ``inet_server_port()`` differs from the port we
   connected to. Signs alone refuse nothing: a session pooler, a port forward or a tunnel show them too.
2. A *proof* with a second connection B (the probe runs whatever the signs say). A is the preflight's
   autocommit connection, so it holds no transaction between statements. Each round B opens a
   transaction (pinning a server connection to B), A asks for its backend while B holds it, then B rolls
   back; odd rounds after the first also have A ask right before B's ``BEGIN``. A backend is named by
   (pid, backend_start). Any of these proves that A has no backend of its own: B's transaction runs on
   A's backend; A's backend changes between two of its statements; B's ``BEGIN`` is refused (statement
   mode). With a session of its own (direct, or session pooling) none of them can happen, so a
   connection that keeps its backend is never refused. On a quiet pool the proof comes in at most two
   rounds with either PgBouncer server order: LIFO (the default: B's first ``BEGIN`` takes the server A
   just released) and ``server_round_robin`` (FIFO: B's second ``BEGIN`` takes the server A released
   before B let go of its own). Other clients of the pool make A's backend change sooner or later: with 3
   to 8 clients churning transactions, 600 probes were all proved within 5 of the :data:`ROUNDS` rounds.

The probe's statements are never prepared (a prepared statement does not survive transaction pooling).
If the pool is full, B's first statement queues in the pooler until its ``query_wait_timeout``; A's
statement queued behind B's transaction is let through by B letting go after :data:`HOLD_WAIT`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import psycopg

ROUNDS = 12
# How long A's statement may wait while B holds its transaction before B lets go: a session of its own
# answers at once; under transaction pooling A may be queued for the very server B holds.
HOLD_WAIT = dt.timedelta(seconds=3)

IDENTITY_SQL = (
    "SELECT pg_backend_pid(), inet_server_port(), host(inet_server_addr()),"
    " (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())"
)


@dataclass(frozen=True)
class Backend:
    """One server process, named so that a pid reused later (or on another host) is not taken for it."""

    pid: int
    started: dt.datetime | None

    def __str__(self) -> str:
        return f"backend {self.pid}"


@dataclass(frozen=True)
class PoolerFinding:
    """What the probe saw: ``mode`` is ``None`` when the connection keeps its own backend."""

    signs: tuple[str, ...]
    server: str | None = None  # host:port the backend was reached on (None over a Unix socket)
    mode: str | None = None  # "transaction" or "statement": the pooling that breaks the engine
    proof: str | None = None
    rounds: int = 0

    @property
    def proxied(self) -> bool:
        return bool(self.signs)


def _identity(conn: psycopg.Connection[Any]) -> tuple[Backend, str | None]:
    """The backend serving this statement, and the server's own address (``host:port``; None on a socket)."""
    row = conn.execute(IDENTITY_SQL, prepare=False).fetchone()  # a prepared one would not survive pooling
    assert row is not None
    return Backend(int(row[0]), row[3]), (f"{row[2]}:{row[1]}" if row[1] is not None else None)


def proxy_signs(conn: psycopg.Connection[Any], backend: Backend, server: str | None) -> tuple[str, ...]:
    """Hints that ``conn`` does not talk to PostgreSQL directly (see the module docstring, part 1)."""
    signs: list[str] = []
    if conn.info.backend_pid != backend.pid:
        signs.append(
            f"the connection's cancel key names backend {conn.info.backend_pid} but the server says it is "
            f"{backend.pid}: something else answered the connection"
        )
    server_port = int(server.rsplit(":", 1)[1]) if server else None
    if server_port is not None and server_port != conn.info.port:
        signs.append(f"connected to port {conn.info.port}, but the server is reached at {server}")
    return tuple(signs)


def _is_statement_pooling(exc: psycopg.Error) -> bool:
    """PgBouncer's answer to BEGIN in statement mode (it then closes the client connection)."""
    return "statement pooling" in str(exc)


def probe_pooler(
    conn: psycopg.Connection[Any],
    connect: Callable[[], psycopg.Connection[Any]],
    log: logging.Logger,
    *,
    rounds: int = ROUNDS,
    hold_wait: dt.timedelta = HOLD_WAIT,
) -> PoolerFinding:
    """Whether ``conn`` (autocommit, idle) keeps its backend, proved with one more connection from ``connect``.

    Opens exactly one extra connection, and runs at most ``2 * rounds`` short statements on each.
    """
    if not conn.autocommit:
        raise ValueError("the pooler probe needs an autocommit connection (idle between its statements)")
    mine, server = _identity(conn)
    signs = proxy_signs(conn, mine, server)
    for sign in signs:
        log.info("pooler probe: %s", sign)

    def found(mode: str, proof: str, done: int) -> PoolerFinding:
        return PoolerFinding(signs, server, mode, proof, done)

    with closing(connect()) as other, ThreadPoolExecutor(1, thread_name_prefix="pooler-probe") as pool:
        other.autocommit = False
        for done in range(1, rounds + 1):
            if done % 2 == 1 and done > 1:  # odd rounds: A releases its server right before B's BEGIN
                now, _ = _identity(conn)
                if now != mine:
                    return found("transaction", _changed(mine, now), done)
            try:
                theirs, _ = _identity(other)  # psycopg opens the transaction: B holds a server till rollback
            except psycopg.Error as exc:
                if not _is_statement_pooling(exc):
                    raise
                return found(
                    "statement", f"a second connection's BEGIN was refused: {str(exc).strip()}", done
                )
            if theirs == mine:
                other.rollback()
                proof = f"a second connection's transaction ran on {mine}, the first connection's backend"
                return found("transaction", proof, done)
            asked = pool.submit(_identity, conn)
            waited = None
            try:
                now, _ = asked.result(timeout=hold_wait.total_seconds())
            except FutureTimeout:
                waited = hold_wait
                other.rollback()  # let go of the server A may be queued for
                now, _ = asked.result()
            other.rollback()
            if now != mine:
                return found("transaction", _changed(mine, now, waited), done)
            log.debug("pooler probe round %d: %s kept, the other ran on %s", done, mine, theirs)
    return PoolerFinding(signs, server, None, None, rounds)


def _changed(before: Backend, after: Backend, waited: dt.timedelta | None = None) -> str:
    how = f" after waiting {waited} for a server" if waited else ""
    return f"one connection's backend changed between two of its statements ({before}, then {after}{how})"


def refusal_message(finding: PoolerFinding, conn: psycopg.Connection[Any]) -> str:
    """Why the migration must not run through this pooler, and the fix: a direct connection."""
    where = f"{conn.info.host}:{conn.info.port}"
    direct = f" (e.g. {finding.server}, where the pooler itself reaches it)" if finding.server else ""
    signs = "".join(f"; {sign}" for sign in finding.signs)
    return (
        f"a connection pooler in {finding.mode} pooling mode sits between the migration and PostgreSQL at "
        f"{where}: {finding.proof}{signs}. The migration needs one server session per connection for its "
        "session advisory locks, session SETs (lock_timeout), the index monitor's backend pid and prepared "
        "statements, and this pooling breaks all of them. Fix: give migrations a direct connection to "
        f"PostgreSQL: point the migration's Airflow connection at the server itself, not the pooler{direct}; "
        "a pooler in session mode (PgBouncer pool_mode = session) is fine too."
    )
