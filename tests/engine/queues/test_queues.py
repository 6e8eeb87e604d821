"""Queue pause / resume / drain against a real Redis, on hand-made BullMQ 5, BullMQ 6 and Bull 3 layouts.

The real-worker test (tests/test_bullmq_worker.py) shows the libraries honour what these scripts do;
these pin down each layout's keys exactly, the marker rules and the failure paths.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis

from airflow_provider_expand.engine.queues.admin_endpoint import AdminEndpointError
from airflow_provider_expand.engine.queues.drain import drain_status
from airflow_provider_expand.engine.queues.marker import Marker
from airflow_provider_expand.engine.queues.pause import (
    QueueConnectionError,
    QueueLayoutError,
    QueueNameError,
    QueueRef,
    pause_queue,
    pause_queues,
    resume_queue,
    resume_queues,
    with_timeouts,
)

LOG = logging.getLogger("test.queues")
M1 = Marker("m1", "run-1")
M2 = Marker("m2", "run-1")
META = {"version": "bullmq:5.81.5", "concurrency": "3", "opts.maxLenEvents": "10000"}


def make_bullmq(r: redis.Redis, prefix: str, name: str, *, version: str, jobs: int = 3) -> QueueRef:
    """A queue as BullMQ leaves it: meta with other fields, jobs waiting, a marker for the workers."""
    ref = QueueRef(prefix, name)
    r.hset(ref.key("meta"), mapping={**META, "version": version})
    if jobs:
        r.lpush(ref.key("wait"), *[str(i) for i in range(1, jobs + 1)])  # oldest at the right end
        r.zadd(ref.key("marker"), {"0": 0})
    r.set(ref.key("id"), jobs)
    return ref


def make_bull3(r: redis.Redis, prefix: str, name: str, jobs: int = 3) -> QueueRef:
    ref = QueueRef(prefix, name)
    r.lpush(ref.key("wait"), *[str(i) for i in range(1, jobs + 1)])
    r.set(ref.key("id"), jobs)
    return ref


def events(r: redis.Redis, ref: QueueRef) -> list[str]:
    return [fields[b"event"].decode() for _, fields in r.xrange(ref.key("events"))]


def meta(r: redis.Redis, ref: QueueRef) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in r.hgetall(ref.key("meta")).items()}


def ids(r: redis.Redis, key: str) -> list[str]:
    return [v.decode() for v in r.lrange(key, 0, -1)]


def marker_of(r: redis.Redis, ref: QueueRef) -> Marker | None:
    value = r.get(ref.key("airflow-expand:paused-by"))
    return Marker.decode(value.decode()) if value else None


def test_bullmq5_pause_renames_wait_and_resume_restores_it(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    ref = make_bullmq(redis_client, redis_prefix, "sync", version="bullmq:5.81.5")
    before = ids(redis_client, ref.key("wait"))

    [result] = pause_queues(redis_client, ["sync"], prefix=redis_prefix, marker=M1, log=LOG)

    assert (result.action, result.layout, result.version) == ("paused", "bullmq5", "bullmq:5.81.5")
    assert not redis_client.exists(ref.key("wait"))
    assert ids(redis_client, ref.key("paused")) == before
    assert meta(redis_client, ref) == {**META, "paused": "1"}  # no other field touched
    assert not redis_client.exists(ref.key("marker"))
    assert events(redis_client, ref) == ["paused"]
    assert marker_of(redis_client, ref) == M1

    [back] = resume_queues(redis_client, ["sync"], prefix=redis_prefix, marker=M1, log=LOG)

    assert back.action == "resumed"
    assert ids(redis_client, ref.key("wait")) == before
    assert not redis_client.exists(ref.key("paused"))
    assert meta(redis_client, ref) == META
    assert redis_client.zrange(ref.key("marker"), 0, -1, withscores=True) == [(b"0", 0.0)]
    assert events(redis_client, ref) == ["paused", "resumed"]
    assert marker_of(redis_client, ref) is None


def test_bullmq6_pause_only_sets_the_flag_and_resume_moves_a_legacy_paused_list_in_chunks(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    ref = make_bullmq(redis_client, redis_prefix, "sync", version="bullmq:6.7.0", jobs=2)

    [result] = pause_queues(redis_client, ["sync"], prefix=redis_prefix, marker=M1, log=LOG)

    assert (result.action, result.layout) == ("paused", "bullmq6")
    assert ids(redis_client, ref.key("wait")) == ["2", "1"]  # v6 leaves waiting jobs where they are
    assert not redis_client.exists(ref.key("paused"))
    assert meta(redis_client, ref) == {**META, "version": "bullmq:6.7.0", "paused": "1"}
    assert not redis_client.exists(ref.key("marker"))
    assert events(redis_client, ref) == ["paused"]

    # A paused list left over from a BullMQ 5 era pause: resume must move all of it back.
    legacy = [str(i) for i in range(100, 112)]
    redis_client.rpush(ref.key("paused"), *legacy)
    back = resume_queue(redis_client, ref, marker=M1, chunk=5)

    assert (back.action, back.calls) == ("resumed", 3)
    assert ids(redis_client, ref.key("wait")) == ["2", "1", *legacy]
    assert not redis_client.exists(ref.key("paused"))
    assert meta(redis_client, ref) == {**META, "version": "bullmq:6.7.0"}
    assert events(redis_client, ref) == ["paused", "resumed"]  # one event for the whole resume
    assert redis_client.zcard(ref.key("marker")) == 1
    assert marker_of(redis_client, ref) is None


def test_resume_with_nothing_waiting_sets_the_delayed_marker(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    ref = make_bullmq(redis_client, redis_prefix, "sync", version="bullmq:6.7.0", jobs=0)
    due_ms = 1_900_000_000_000
    redis_client.zadd(ref.key("delayed"), {"9": due_ms * 0x1000 + 9})
    pause_queue(redis_client, ref, marker=M1)
    resume_queue(redis_client, ref, marker=M1)
    assert redis_client.zrange(ref.key("marker"), 0, -1, withscores=True) == [(b"1", float(due_ms))]


def test_bull3_uses_meta_paused_and_publishes(redis_client: redis.Redis, redis_prefix: str) -> None:
    ref = make_bull3(redis_client, redis_prefix, "sync")
    pubsub = redis_client.pubsub()
    pubsub.subscribe(ref.key("paused"), ref.key("resumed"))
    for _ in range(2):
        assert pubsub.get_message(timeout=2)["type"] == "subscribe"  # type: ignore[index]

    [result] = pause_queues(redis_client, ["sync"], prefix=redis_prefix, marker=M1, log=LOG)

    assert (result.action, result.layout) == ("paused", "bull3")
    assert redis_client.get(ref.key("meta-paused")) == b"1"
    assert ids(redis_client, ref.key("paused")) == ["3", "2", "1"]
    assert not redis_client.exists(ref.key("wait"))
    assert not redis_client.exists(ref.key("meta"))  # Bull 3 has no meta hash: none created
    message = pubsub.get_message(timeout=2)
    assert message and (message["channel"], message["data"]) == (ref.key("paused").encode(), b"paused")

    resume_queues(redis_client, ["sync"], prefix=redis_prefix, marker=M1, log=LOG)

    assert not redis_client.exists(ref.key("meta-paused"))
    assert ids(redis_client, ref.key("wait")) == ["3", "2", "1"]
    message = pubsub.get_message(timeout=2)
    assert message and (message["channel"], message["data"]) == (ref.key("resumed").encode(), b"resumed")
    assert not redis_client.exists(ref.key("meta"))
    pubsub.close()


def test_queue_paused_before_the_migration_stays_paused(redis_client: redis.Redis, redis_prefix: str) -> None:
    ref = make_bullmq(redis_client, redis_prefix, "sync", version="bullmq:5.81.5")
    ours = make_bullmq(redis_client, redis_prefix, "mail", version="bullmq:5.81.5")
    # Paused by hand the way BullMQ 5 does it, before the migration.
    redis_client.rename(ref.key("wait"), ref.key("paused"))
    redis_client.hset(ref.key("meta"), "paused", 1)

    results = pause_queues(redis_client, ["sync", "mail"], prefix=redis_prefix, marker=M1, log=LOG)
    assert [r.action for r in results] == ["already_paused", "paused"]
    assert marker_of(redis_client, ref) is None

    results2 = resume_queues(redis_client, ["sync", "mail"], prefix=redis_prefix, marker=M1, log=LOG)
    assert [r.action for r in results2] == ["not_ours", "resumed"]
    assert meta(redis_client, ref)["paused"] == "1"
    assert ids(redis_client, ref.key("paused")) == ["3", "2", "1"]
    assert "paused" not in meta(redis_client, ours)


def test_pause_is_idempotent_and_another_migrations_pause_is_not_ours(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    ref = make_bullmq(redis_client, redis_prefix, "sync", version="bullmq:6.7.0")
    assert pause_queue(redis_client, ref, marker=M1).action == "paused"
    assert pause_queue(redis_client, ref, marker=M1).action == "already_paused_by_us"  # a retry
    other = pause_queue(redis_client, ref, marker=M2)
    assert (other.action, other.owner) == ("already_paused", M1)
    assert resume_queue(redis_client, ref, marker=M2).action == "not_ours"
    assert meta(redis_client, ref)["paused"] == "1"
    assert resume_queue(redis_client, ref, marker=M1).action == "resumed"
    assert resume_queue(redis_client, ref, marker=M1).action == "not_ours"  # twice is harmless
    assert "paused" not in meta(redis_client, ref)


def test_resume_after_somebody_else_resumed_clears_our_marker_and_moves_stranded_jobs(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    ref = make_bullmq(redis_client, redis_prefix, "sync", version="bullmq:6.7.0")
    pause_queue(redis_client, ref, marker=M1)
    redis_client.hdel(ref.key("meta"), "paused")
    redis_client.rpush(ref.key("paused"), *[str(i) for i in range(50, 57)])  # stranded job ids
    result = resume_queue(redis_client, ref, marker=M1, chunk=3)
    assert (result.action, result.calls) == ("already_resumed", 3)
    assert marker_of(redis_client, ref) is None
    assert events(redis_client, ref) == ["paused"]  # the resumer announced it, not us
    assert not redis_client.exists(ref.key("paused"))
    assert ids(redis_client, ref.key("wait"))[-7:] == [str(i) for i in range(50, 57)]


def test_dry_run_changes_nothing(redis_client: redis.Redis, redis_prefix: str) -> None:
    ref = make_bullmq(redis_client, redis_prefix, "sync", version="bullmq:5.81.5")
    keys = sorted(redis_client.scan_iter(match=f"{redis_prefix}:*"))
    before = {k: redis_client.dump(k) for k in keys}
    [result] = pause_queues(
        redis_client,
        ["sync"],
        prefix=redis_prefix,
        marker=M1,
        log=LOG,
        dry_run=True,
        pause_url="http://127.0.0.1:9/never-called",
    )
    assert result.action == "would_pause"
    assert sorted(redis_client.scan_iter(match=f"{redis_prefix}:*")) == keys
    assert {k: redis_client.dump(k) for k in keys} == before
    assert resume_queue(redis_client, ref, marker=M1).action == "not_ours"


@pytest.mark.parametrize("bad", ["", "has space", "sync*", "a?b", "[x]", "a:b", "tab\there"])
def test_bad_queue_names_are_refused_before_anything_is_paused(
    redis_client: redis.Redis, redis_prefix: str, bad: str
) -> None:
    ref = make_bullmq(redis_client, redis_prefix, "sync", version="bullmq:5.81.5")
    with pytest.raises(QueueNameError, match="queue name") as err:
        pause_queues(redis_client, ["sync", bad], prefix=redis_prefix, marker=M1, log=LOG)
    assert repr(bad) in str(err.value)
    assert "paused" not in meta(redis_client, ref)


def test_bad_prefix_and_duplicate_names(redis_client: redis.Redis) -> None:
    with pytest.raises(QueueNameError, match=r"prefix 'bu\*ll'"):
        pause_queues(redis_client, ["sync"], prefix="bu*ll", marker=M1, log=LOG)
    with pytest.raises(QueueNameError, match=r"'sync'.*listed twice"):
        pause_queues(redis_client, ["sync", "sync"], prefix="bull", marker=M1, log=LOG)


def test_failure_on_a_later_queue_resumes_the_ones_already_paused(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    first = make_bullmq(redis_client, redis_prefix, "q1", version="bullmq:5.81.5")
    second = make_bullmq(redis_client, redis_prefix, "q2", version="bullmq:6.7.0")
    make_bullmq(redis_client, redis_prefix, "q3", version="bullmq:4.17.0")

    with pytest.raises(QueueLayoutError, match=r"q3.*bullmq:4\.17\.0"):
        pause_queues(redis_client, ["q1", "q2", "q3"], prefix=redis_prefix, marker=M1, log=LOG)

    for ref in (first, second):
        assert "paused" not in meta(redis_client, ref)
        assert marker_of(redis_client, ref) is None
        assert ids(redis_client, ref.key("wait")) == ["3", "2", "1"]
    assert events(redis_client, first) == ["paused", "resumed"]


def test_missing_queue_and_unknown_layout_are_named(redis_client: redis.Redis, redis_prefix: str) -> None:
    with pytest.raises(QueueLayoutError, match=r"'[^']*:nosuch'.*no such queue"):
        pause_queues(redis_client, ["nosuch"], prefix=redis_prefix, marker=M1, log=LOG)
    ref = QueueRef(redis_prefix, "noversion")
    redis_client.xadd(ref.key("events"), {"event": "added"})
    with pytest.raises(QueueLayoutError, match="cannot tell BullMQ 5 from 6"):
        pause_queue(redis_client, ref, marker=M1)
    assert pause_queue(redis_client, ref, marker=M1, layout="bullmq6").layout == "bullmq6"


def test_redis_that_refuses_or_does_not_answer_is_a_clear_error(redis_prefix: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    refused = with_timeouts(redis.Redis(host="127.0.0.1", port=port), dt.timedelta(seconds=0.5))
    with pytest.raises(QueueConnectionError, match=r"did not answer while pausing queue 'bull:sync'"):
        pause_queues(refused, ["sync"], marker=M1, log=LOG)

    # A server that accepts the connection and never replies: the timeout must end the wait.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    try:
        client = with_timeouts(
            redis.Redis(host="127.0.0.1", port=silent.getsockname()[1]), dt.timedelta(seconds=0.5)
        )
        started = time.monotonic()
        with pytest.raises(QueueConnectionError, match="'bull:sync'"):
            pause_queues(client, ["sync"], marker=M1, log=LOG)
        assert time.monotonic() - started < 5
    finally:
        silent.close()


# -- the app's admin endpoint, a real HTTP server on 127.0.0.1 ----------------------------------------


class AdminApp:
    """Records every request; ``/fail`` answers 500, ``/moved`` 302, ``/slow`` sleeps 2 s."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.auth: list[str | None] = []
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                app.requests.append((self.path, json.loads(body or b"{}")))
                app.auth.append(self.headers.get("Authorization"))
                if self.path == "/slow":
                    time.sleep(2)
                status = {"/fail": 500, "/moved": 302}.get(self.path, 204)
                self.send_response(status)
                if status == 302:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def paths(self) -> list[str]:
        return [p for p, _ in self.requests]


@pytest.fixture
def admin_app() -> Iterator[AdminApp]:
    app = AdminApp()
    yield app
    app.server.shutdown()
    app.server.server_close()


def test_admin_endpoint_is_called_on_pause_and_resume(
    redis_client: redis.Redis, redis_prefix: str, admin_app: AdminApp
) -> None:
    make_bullmq(redis_client, redis_prefix, "sync", version="bullmq:6.7.0")
    common: dict[str, Any] = {"prefix": redis_prefix, "marker": M1, "log": LOG}
    pause_queues(redis_client, ["sync"], pause_url=f"{admin_app.url}/admin/queues/pause", **common)
    assert admin_app.requests == [("/admin/queues/pause", {"migration_id": "m1", "queues": ["sync"]})]

    resume_queues(redis_client, ["sync"], resume_url=f"{admin_app.url}/admin/queues/resume", **common)
    resume_queues(redis_client, ["sync"], resume_url=f"{admin_app.url}/admin/queues/resume", **common)
    assert admin_app.paths() == ["/admin/queues/pause", "/admin/queues/resume"]  # the second resume: not ours


def test_failing_admin_endpoint_unpauses_the_queues_and_the_teardown_resumes_the_app(
    redis_client: redis.Redis, redis_prefix: str, admin_app: AdminApp
) -> None:
    ref = make_bullmq(redis_client, redis_prefix, "sync", version="bullmq:5.81.5")
    secret_url = admin_app.url.replace("http://", "http://ops:hunter2@") + "/fail"
    with pytest.raises(
        AdminEndpointError, match=r"POST http://\*\*\*@127\.0\.0\.1:\d+/fail answered HTTP 500"
    ) as err:
        pause_queues(redis_client, ["sync"], prefix=redis_prefix, marker=M1, log=LOG, pause_url=secret_url)
    assert "hunter2" not in str(err.value)
    assert admin_app.auth == ["Basic " + base64.b64encode(b"ops:hunter2").decode()]  # sent as Basic auth
    assert "paused" not in meta(redis_client, ref)
    assert ids(redis_client, ref.key("wait")) == ["3", "2", "1"]

    # The POST may have half-worked: the resume teardown still tells the app to resume.
    resume_queues(
        redis_client,
        ["sync"],
        prefix=redis_prefix,
        marker=M1,
        log=LOG,
        resume_url=f"{admin_app.url}/ok",
    )
    assert admin_app.paths() == ["/fail", "/ok"]


@pytest.mark.parametrize(("path", "message"), [("/moved", "HTTP 302"), ("/slow", "failed within 0.5s")])
def test_admin_endpoint_redirect_or_timeout_is_an_error(
    redis_client: redis.Redis, redis_prefix: str, admin_app: AdminApp, path: str, message: str
) -> None:
    ref = make_bullmq(redis_client, redis_prefix, "sync", version="bullmq:6.7.0")
    with pytest.raises(AdminEndpointError, match=message):
        pause_queues(
            redis_client,
            ["sync"],
            prefix=redis_prefix,
            marker=M1,
            log=LOG,
            pause_url=admin_app.url + path,
            http_timeout=dt.timedelta(seconds=0.5),
        )
    assert "paused" not in meta(redis_client, ref)


# -- drain ---------------------------------------------------------------------------------------------


def test_drain_reports_active_jobs_whose_worker_died(
    redis_client: redis.Redis, redis_url: str, redis_prefix: str
) -> None:
    ref = make_bullmq(redis_client, redis_prefix, "sync", version="bullmq:5.81.5", jobs=3)
    redis_client.zadd(ref.key("delayed"), {"8": 1})
    redis_client.rpush(ref.key("active"), "41", "42")
    redis_client.set(ref.key("41:lock"), "token", px=30_000)  # 41's worker is alive, 42's died
    pause_queue(redis_client, ref, marker=M1)

    status = drain_status(redis_client, ["sync"], prefix=redis_prefix)
    [snap] = status.snapshots
    assert not status.drained
    assert (snap.active, snap.waiting, snap.delayed, snap.paused, snap.paused_by) == (2, 3, 1, True, M1)
    assert snap.orphaned == ("42",)
    assert snap.live_workers == 0
    report = snap.orphan_report()
    assert report and "42" in report and "41" not in report and "an operator must" in report

    # A BullMQ worker connection for this queue (BullMQ names it <prefix>:<base64 name>:w:<name>).
    worker = redis.Redis.from_url(redis_url)
    worker.client_setname(f"{redis_prefix}:{base64.b64encode(b'sync').decode()}:w:box1")
    try:
        [snap] = drain_status(redis_client, ["sync"], prefix=redis_prefix).snapshots
        assert snap.live_workers == 1
        assert "stalled-job check will move them back" in (snap.orphan_report() or "")
    finally:
        worker.close()

    redis_client.delete(ref.key("active"))
    status = drain_status(redis_client, ["sync"], prefix=redis_prefix)
    assert status.drained and status.active == 0
    assert status.to_dict()["queues"][0] == {
        "queue": ref.label,
        "active": 0,
        "waiting": 3,
        "delayed": 1,
        "paused": True,
        "orphaned": [],
    }
