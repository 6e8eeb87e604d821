"""The post-deploy watch: error lines from a real container's log, the 5xx rate scraped from a real HTTP
endpoint in Prometheus text, a problem that clears going on, one that persists escalating."""

from __future__ import annotations

import datetime as dt
import http.server
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from docker import APIClient

from airflow_provider_expand.engine.deploy.run import wait_healthy
from airflow_provider_expand.engine.deploy.watch import (
    DeployWatch,
    EscalationError,
    RequestCounts,
    WatchLimits,
    parse_request_counts,
)
from tests.deploy.images import AppContainer

log = logging.getLogger("test.watch")

METRICS = """# HELP http_requests_total Requests served.
# TYPE http_requests_total counter
http_requests_total{{method="GET",status="200"}} {ok}
http_requests_total{{method="GET",status="503"}} {bad}
http_requests_total{{method="POST",status="500"}} 0
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.5
"""


class Metrics:
    """A real HTTP server on loopback whose /metrics the test moves forward."""

    def __init__(self) -> None:
        self.ok, self.bad = 0, 0
        metrics = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = METRICS.format(ok=metrics.ok, bad=metrics.bad).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    server = Metrics()
    yield server
    server.server.shutdown()


def test_parse_request_counts_sums_series_by_status() -> None:
    counts = parse_request_counts(METRICS.format(ok=90, bad=10))
    assert counts == RequestCounts(total=100.0, errors=10.0)
    assert RequestCounts(150.0, 40.0).rate_since(counts) == pytest.approx(30 / 50)
    assert RequestCounts(5.0, 5.0).rate_since(counts) == 1.0  # a counter reset counts from zero
    assert counts.rate_since(counts) is None
    with pytest.raises(ValueError, match="http://x/metrics has no http_requests_total"):
        parse_request_counts("# TYPE up gauge\nup 1\n", "http://x/metrics")


def _fail(url: str) -> None:
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"{url}/cgi-bin/fail", timeout=5)


def test_error_lines_that_clear_are_logged_and_the_watch_goes_on(
    docker_api: APIClient, app_container: AppContainer, caplog: pytest.LogCaptureFixture
) -> None:
    health = f"{app_container.url}/health/ready"
    wait_healthy(docker_api, app_container.name, health, dt.timedelta(seconds=20), log)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    watch = DeployWatch(
        docker_api, app_container.name, WatchLimits(health), dt.timedelta(seconds=30), start, log
    )
    assert watch.poll(dt.datetime.now(dt.UTC)) == []
    time.sleep(1.1)  # the log's `since` has one-second steps
    _fail(app_container.url)
    _fail(app_container.url)
    time.sleep(0.2)
    found = watch.poll(dt.datetime.now(dt.UTC))
    assert len(found) == 1 and "2 error lines" in found[0] and "boom" in found[0]
    time.sleep(1.1)
    with caplog.at_level(logging.WARNING):
        assert watch.poll(dt.datetime.now(dt.UTC)) == []
    assert "problems cleared" in caplog.text
    assert watch.error_total == 2


def test_a_5xx_rate_that_persists_escalates(
    docker_api: APIClient, app_container: AppContainer, metrics: Metrics
) -> None:
    health = f"{app_container.url}/health/ready"
    wait_healthy(docker_api, app_container.name, health, dt.timedelta(seconds=20), log)
    limits = WatchLimits(health, metrics_url=metrics.url, max_5xx_rate=0.05)
    watch = DeployWatch(
        docker_api, app_container.name, limits, dt.timedelta(seconds=2), dt.datetime.now(dt.UTC), log
    )
    metrics.ok, metrics.bad = 1000, 10
    assert watch.poll(dt.datetime.now(dt.UTC)) == []  # the first scrape: 1% since the start
    metrics.ok, metrics.bad = 1090, 20  # 10 of the next 100 failed
    t0 = dt.datetime.now(dt.UTC)
    assert watch.poll(t0) == ["5xx rate 10.0% of http_requests_total (max 5.0%)"]
    metrics.ok, metrics.bad = 1180, 30
    with pytest.raises(EscalationError, match=r"persisted 0:00:02.*5xx rate 10.0%"):
        watch.poll(t0 + dt.timedelta(seconds=2))


def test_a_dead_container_is_a_problem(docker_api: APIClient, app_container: AppContainer) -> None:
    health = f"{app_container.url}/health/ready"
    watch = DeployWatch(
        docker_api, app_container.name, WatchLimits(health), dt.timedelta(0), dt.datetime.now(dt.UTC), log
    )
    docker_api.stop(app_container.name, timeout=5)
    with pytest.raises(EscalationError, match=rf"container {app_container.name} not running"):
        watch.poll(dt.datetime.now(dt.UTC))
