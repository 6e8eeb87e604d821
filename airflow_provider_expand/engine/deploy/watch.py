"""The post-deploy watch ('Post-Migration Verification', 'Escalation Path'): health, error lines, 5xx rate.

A problem is only escalated when it persists past ``escalate_after`` (the runbook's T+15: rollback); one
that clears before that is logged and the migration goes on.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import urllib.request
from dataclasses import dataclass, field

from docker import APIClient
from prometheus_client.parser import text_string_to_metric_families

from airflow_provider_expand.engine.deploy.run import container_health, http_get, http_status
from airflow_provider_expand.engine.errors import DefinitiveError
from airflow_provider_expand.engine.redact import redact_url

ERROR_LINE = re.compile(r"\b(ERROR|FATAL|CRITICAL|PANIC|panic)\b|Traceback \(most recent call last\)")
STATUS_LABELS = ("status", "code", "status_code")


class EscalationError(DefinitiveError):
    """A problem persisted past ``escalate_after``: the deploy is to be rolled back."""


def error_lines(
    client: APIClient, container: str, since: dt.datetime, pattern: re.Pattern[str] = ERROR_LINE
) -> list[str]:
    """The container's log lines since ``since`` that look like errors."""
    # a float timestamp: the SDK turns a datetime into one assuming it is naive UTC
    raw = client.logs(container, stdout=True, stderr=True, since=since.timestamp(), timestamps=False)
    return [line for line in bytes(raw).decode("utf-8", "replace").splitlines() if pattern.search(line)]


@dataclass(frozen=True)
class RequestCounts:
    """``http_requests_total`` summed over its series: all requests and the 5xx ones."""

    total: float
    errors: float

    def rate_since(self, earlier: RequestCounts | None) -> float | None:
        """The 5xx share of the requests between ``earlier`` and now (None without requests)."""
        base = earlier or RequestCounts(0.0, 0.0)
        total, errors = self.total - base.total, self.errors - base.errors
        if total < 0:  # counters reset: the process restarted; count from zero
            total, errors = self.total, self.errors
        return errors / total if total > 0 else None


def parse_request_counts(text: str, url: str = "metrics") -> RequestCounts:
    """Sum ``http_requests_total`` from Prometheus text, split by its status label."""
    total = errors = 0.0
    found = False
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != "http_requests_total":
                continue
            found = True
            total += sample.value
            status = next((sample.labels[k] for k in STATUS_LABELS if k in sample.labels), "")
            if status.startswith("5"):
                errors += sample.value
    if not found:
        raise ValueError(f"{url} has no http_requests_total series")
    return RequestCounts(total, errors)


def scrape_request_counts(url: str, *, timeout: float = 5.0) -> RequestCounts:
    with urllib.request.urlopen(http_get(url), timeout=timeout) as response:
        return parse_request_counts(response.read().decode("utf-8", "replace"), redact_url(url))


@dataclass
class WatchLimits:
    health_url: str
    max_error_lines: int = 0
    metrics_url: str | None = None
    max_5xx_rate: float | None = None


@dataclass
class DeployWatch:
    """Polls one deployed container; ``poll`` returns the problems seen now and escalates persistent ones."""

    client: APIClient
    container: str
    limits: WatchLimits
    escalate_after: dt.timedelta
    since: dt.datetime
    log: logging.Logger
    error_total: int = 0
    problem_since: dt.datetime | None = None
    problems_seen: list[str] = field(default_factory=list)
    _counts: RequestCounts | None = None

    def problems(self, now: dt.datetime) -> list[str]:
        found: list[str] = []
        running, state = container_health(self.client, self.container)
        if not running:
            found.append(f"container {self.container} {state}")
        status = http_status(self.limits.health_url)
        if status != 200:
            found.append(f"GET {redact_url(self.limits.health_url)} -> {status}")
        if running:
            lines = error_lines(self.client, self.container, self.since)
            self.since = now
            self.error_total += len(lines)
            if len(lines) > self.limits.max_error_lines:
                found.append(
                    f"{len(lines)} error lines in {self.container}'s log since the last check "
                    f"(max {self.limits.max_error_lines}), e.g. {lines[-1].strip()[:200]!r}"
                )
        if self.limits.metrics_url and self.limits.max_5xx_rate is not None:
            try:
                counts = scrape_request_counts(self.limits.metrics_url)
            except (OSError, ValueError) as exc:
                found.append(redact_url(f"metrics {self.limits.metrics_url} unreadable: {exc}"))
            else:
                rate = counts.rate_since(self._counts)
                self._counts = counts
                if rate is not None and rate > self.limits.max_5xx_rate:
                    found.append(
                        f"5xx rate {rate:.1%} of http_requests_total (max {self.limits.max_5xx_rate:.1%})"
                    )
        return found

    def poll(self, now: dt.datetime) -> list[str]:
        """One check; raises :class:`EscalationError` once problems have lasted ``escalate_after``."""
        found = self.problems(now)
        if not found:
            if self.problem_since is not None:
                self.log.warning(
                    "%s: problems cleared after %s (%s); going on",
                    self.container,
                    now - self.problem_since,
                    "; ".join(self.problems_seen[-3:]),
                )
            self.problem_since = None
            return found
        self.problems_seen += found
        if self.problem_since is None:
            self.problem_since = now
        lasting = now - self.problem_since
        self.log.warning("%s: %s (for %s)", self.container, "; ".join(found), lasting)
        if lasting >= self.escalate_after:
            raise EscalationError(
                f"container {self.container}: problems persisted {lasting} (escalate_after "
                f"{self.escalate_after}): {'; '.join(found)}"
            )
        return found
