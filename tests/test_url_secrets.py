"""Credentials in URLs and application query texts never reach a log, a rendered template, Redis, the ledger
or a mail: the queue operators against real Redis and a real Basic-auth HTTP server, query texts from a
real ``pg_stat_activity``, the notifier through a real SMTP server."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Iterator
from typing import Any, cast

import psycopg
import pytest
import redis
from airflow.sdk import Context
from airflow.sdk.execution_time.task_runner import _serialize_rendered_fields

from airflow_provider_expand.engine.ddl.inspect import lock_holders
from airflow_provider_expand.engine.ledger.store import Ledger
from airflow_provider_expand.engine.lifecycle import Event, Lifecycle
from airflow_provider_expand.engine.preflight.checks import QUERY_PREVIEW, long_transactions
from airflow_provider_expand.engine.queues.admin_endpoint import AdminEndpointError
from airflow_provider_expand.engine.redact import (
    query_text,
    redact_url,
    restore_userinfo,
    set_aside_userinfo,
    url_secrets,
    without_query_texts,
)
from airflow_provider_expand.engine.statements import parse_statements
from airflow_provider_expand.notifications import MigrationNotifier
from airflow_provider_expand.operators.queues import PauseQueuesOperator, ResumeQueuesOperator
from tests.dags.test_deploy_dag import Inbox, smtp_inbox
from tests.secret_urls import PASSWORD, USER, AuthServer, ledger_text, redis_dump

__all__ = ["smtp_inbox"]

CONTEXT = cast(Context, {"run_id": "manual__secrets"})


@pytest.fixture
def auth_server() -> Iterator[AuthServer]:
    server = AuthServer()
    yield server
    server.close()


def test_redaction_of_user_info_and_query_texts() -> None:
    url = f"https://{USER}:{PASSWORD}@shop.example:8443/admin/queues/pause?x=1"
    assert redact_url(url) == "https://***@shop.example:8443/admin/queues/pause?x=1"
    message = f"POST {url} failed; GET http://u:p%40ss@10.0.0.1/health -> 500; see https://docs.example/x"
    assert redact_url(message) == (
        "POST https://***@shop.example:8443/admin/queues/pause?x=1 failed; GET http://***@10.0.0.1/health "
        "-> 500; see https://docs.example/x"
    )
    assert redact_url("http://plain.example/path@v2") == "http://plain.example/path@v2"
    assert url_secrets(url) == [f"{USER}:{PASSWORD}", PASSWORD]
    assert url_secrets("http://u:p%40ss@h/") == ["u:p%40ss", "u:p@ss", "p%40ss", "p@ss"]
    assert url_secrets("http://h/") == []
    field, userinfo = set_aside_userinfo(url)
    assert field == redact_url(url) and restore_userinfo(field, userinfo) == url
    templated = "http://admin:{{ var.value.pw }}@h/p"
    assert set_aside_userinfo(templated) == (templated, None)  # a template holds no secret itself
    shown = query_text("SELECT  *\n FROM users WHERE token = 'abc'" + " OR 1=1" * 100)
    assert len(shown) == QUERY_PREVIEW + 2 and "\n" not in shown
    assert without_query_texts(f"pid 7 in transaction: {shown}; POST {url}") == (
        "pid 7 in transaction: ⟦query text left out⟧; POST https://***@shop.example:8443/admin/queues/pause?x=1"
    )


def _queue(client: redis.Redis, prefix: str) -> None:
    client.hset(f"{prefix}:sync:meta", mapping={"version": "bullmq:5.81.5"})
    client.lpush(f"{prefix}:sync:wait", "1", "2")


def test_queue_operators_with_credentials_in_pause_and_resume_url(
    airflow_conn: dict[str, str],
    redis_client: redis.Redis,
    redis_prefix: str,
    auth_server: AuthServer,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    _queue(redis_client, redis_prefix)
    common: dict[str, Any] = {
        "migration_id": "m1",
        "redis_conn_id": "app_redis",
        "prefix": redis_prefix,
        "queues": ["sync"],
    }
    pause = PauseQueuesOperator(task_id="pause", pause_url=auth_server.url("/admin/queues/pause"), **common)
    # a password that only a template supplies is masked once rendered
    resume = ResumeQueuesOperator(
        task_id="resume",
        resume_url=auth_server.url("/admin/queues/resume").replace(PASSWORD, "{{ params.pw }}"),
        **common,
    )
    with caplog.at_level(logging.DEBUG):
        pause.render_template_fields(cast(Context, {"params": {}}))
        assert pause.execute(CONTEXT)[0]["action"] == "paused"
        in_redis = redis_dump(redis_client, redis_prefix)
        resume.render_template_fields(cast(Context, {"params": {"pw": PASSWORD}}))
        assert PASSWORD in resume.resume_url  # what the task uses
        assert resume.execute(CONTEXT)[0]["action"] == "resumed"

    assert auth_server.requests == [
        ("POST", "/admin/queues/pause", True),
        ("POST", "/admin/queues/resume", True),
    ]
    assert "airflow-expand:m1:admin-paused" in in_redis and "***@127.0.0.1" in in_redis
    rendered = str(_serialize_rendered_fields(pause)) + str(_serialize_rendered_fields(resume))
    assert "***@127.0.0.1" in rendered
    out, err = capfd.readouterr()
    for where, text in {
        "log": caplog.text,
        "task output": out + err,
        "rendered fields": rendered,
        "redis while paused": in_redis,
        "redis after": redis_dump(redis_client, redis_prefix),
    }.items():
        assert PASSWORD not in text, where
    assert "POST http://***@127.0.0.1" in caplog.text or "POST http://***@127.0.0.1" in out


def test_a_failing_admin_endpoint_names_its_url_without_the_password(
    airflow_conn: dict[str, str],
    redis_client: redis.Redis,
    redis_prefix: str,
    auth_server: AuthServer,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    _queue(redis_client, redis_prefix)
    auth_server.status["/admin/queues/pause"] = 503
    pause = PauseQueuesOperator(
        task_id="pause",
        migration_id="m1",
        redis_conn_id="app_redis",
        prefix=redis_prefix,
        queues=["sync"],
        pause_url=auth_server.url("/admin/queues/pause"),
    )
    with caplog.at_level(logging.DEBUG), pytest.raises(AdminEndpointError, match="503") as failed:
        pause.execute(CONTEXT)
    assert redis_client.hget(f"{redis_prefix}:sync:meta", "paused") is None  # undone
    out, err = capfd.readouterr()
    for text in (str(failed.value), caplog.text, out + err, redis_dump(redis_client, redis_prefix)):
        assert PASSWORD not in text


def _hold_lock(dsn: str, query_tail: str, ready: threading.Event, done: threading.Event) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(f"LOCK TABLE products IN ACCESS SHARE MODE; SELECT 1 /* {query_tail} */")
        ready.set()
        done.wait(30)


def test_query_texts_are_shortened_in_logs_and_left_out_of_mails(
    pg_dsn: str,
    pg_conn: psycopg.Connection,
    airflow_conn: dict[str, str],
    smtp_inbox: Inbox,
) -> None:
    pg_conn.execute("CREATE TABLE products (id int)")
    secret_sql = "customer email jane@example.com " + "x" * 400
    ready, done = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_lock, args=(pg_dsn, secret_sql, ready, done))
    holder.start()
    try:
        assert ready.wait(10)
        [stmt] = parse_statements("ALTER TABLE products ADD COLUMN title text;")
        holders = lock_holders(pg_conn, stmt)
        [old] = long_transactions(pg_conn, dt.timedelta(0))
    finally:
        done.set()
        holder.join()
    assert "⟦LOCK TABLE products" in holders and len(holders) < 250
    assert "customer email" in old.describe() and "x" * 200 not in old.describe()

    ledger = Ledger()
    ledger.ensure(pg_conn)
    Lifecycle(ledger).move(pg_conn, "m1", Event.EXPAND_STARTED)
    ledger.start_step(pg_conn, "m1", "expand")
    ledger.finish_step(pg_conn, "m1", "expand", status="failed", error=f"lock timeout; {holders}")
    notifier = MigrationNotifier(
        event="failure",
        migration_id="m1",
        postgres_conn_id="app_db",
        to=["oncall@example.com"],
        smtp_conn_id="smtp_test",
    )
    exception = RuntimeError(f"{old.describe()}; POST http://{USER}:{PASSWORD}@127.0.0.1:9/admin failed")
    notifier.notify(cast(Context, {"exception": exception}))

    body = smtp_inbox.body("FAILED")
    assert (
        "expand failed" in body
        and "lock timeout; products held by pid" in body
        and "query text left out" in body
    ), body
    for leaked in ("customer email", "LOCK TABLE", PASSWORD):
        assert leaked not in body, leaked
    assert PASSWORD not in ledger_text(pg_conn)
