"""Helpers for the tests that give the operators URLs with credentials and look for the password wherever
it could leak: a real HTTP server on loopback that checks Basic auth, and dumps of Redis and the ledger."""

from __future__ import annotations

import base64
import http.server
import threading
from typing import Any

import psycopg
import redis
from psycopg import sql

USER = "ops-admin"
PASSWORD = "Sup3r-S3cret-Pw"  # long enough for Airflow's masker (it skips secrets under 5 characters)

METRICS = """# TYPE http_requests_total counter
http_requests_total{status="200"} 100
http_requests_total{status="500"} 0
"""


class AuthServer:
    """An HTTP server on 127.0.0.1 that answers only requests carrying ``USER:PASSWORD`` as Basic auth.

    ``status`` maps a path to the status it answers (default 200); every request is recorded.
    """

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bool]] = []  # (method, path, authorized)
        self.status: dict[str, int] = {}
        server = self
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                authorized = self.headers.get("Authorization") == expected
                server.requests.append((self.command, self.path, authorized))
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                status = server.status.get(self.path, 200) if authorized else 401
                body = METRICS.encode() if self.path == "/metrics" else b"{}"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://{USER}:{PASSWORD}@127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def redis_dump(client: redis.Redis, prefix: str) -> str:
    """Every key under ``prefix`` and every value in it, whatever its type, as one text."""
    out: list[str] = []
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        kind = client.type(key).decode()
        value: Any
        if kind == "string":
            value = client.get(key)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "set":
            value = client.smembers(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            value = client.xrange(key)
        else:
            value = kind
        out.append(f"{key!r} {value!r}")
    return "\n".join(out)


def ledger_text(conn: psycopg.Connection, schema: str = "airflow_expand") -> str:
    """Every text-like column of every table in the ledger's schema, as one text."""
    columns = conn.execute(
        """
        SELECT table_name, column_name FROM information_schema.columns
         WHERE table_schema = %s AND data_type IN ('text', 'character varying', 'jsonb', 'json')
        """,
        (schema,),
    ).fetchall()
    out: list[str] = []
    for table, column in columns:
        query = sql.SQL("SELECT {}::text FROM {}.{}").format(
            sql.Identifier(column), sql.Identifier(schema), sql.Identifier(table)
        )
        out += [str(row[0]) for row in conn.execute(query)]
    assert columns, f"no ledger tables in schema {schema!r}"
    return "\n".join(out)
