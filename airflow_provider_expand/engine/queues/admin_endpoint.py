"""The application's own admin endpoint (the runbook's ``POST /admin/queues/pause``).

Pausing the BullMQ queues in Redis stops the workers; the app's endpoint also stops its schedulers and
cron producers, which Redis alone cannot reach. Only the standard library: one POST, a 2xx or an error.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from airflow_provider_expand.engine.errors import DefinitiveError, ExpandError, TransientError
from airflow_provider_expand.engine.redact import redact_url, split_credentials


class AdminEndpointError(ExpandError):
    """The app's admin endpoint did not answer 2xx; the message names the URL (credentials removed)."""


class AdminEndpointUnavailable(AdminEndpointError, TransientError):
    """No answer, a timeout or a 5xx: the app may answer a later try."""


class AdminEndpointRefused(AdminEndpointError, DefinitiveError):
    """A 4xx or a redirect: the URL or its credentials are wrong, no retry fixes that."""


def validate_admin_url(url: str, what: str) -> str:
    """Refuse anything but an absolute http(s) URL, at DAG-parse time rather than mid-migration."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an absolute http:// or https:// URL, got {redact_url(url)!r}")
    return url


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is not a 2xx: urllib would silently turn the POST into a GET."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def call_admin_endpoint(
    url: str, *, payload: Mapping[str, Any], timeout: dt.timedelta, log: logging.Logger
) -> int:
    """POST ``payload`` as JSON to ``url``; return the 2xx status or raise :class:`AdminEndpointError`."""
    shown = redact_url(url)
    target, headers = split_credentials(url)
    headers.update({"Content-Type": "application/json", "User-Agent": "airflow-provider-expand"})
    request = urllib.request.Request(
        target, data=json.dumps(dict(payload)).encode(), method="POST", headers=headers
    )
    log.info("POST %s", shown)
    try:
        with _OPENER.open(request, timeout=timeout.total_seconds()) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        body = redact_url(exc.read(500).decode("utf-8", "replace").strip())
        error = AdminEndpointUnavailable if exc.code >= 500 else AdminEndpointRefused
        raise error(
            f"POST {shown} answered HTTP {exc.code}{': ' + body if body else ''} (expected 2xx)"
        ) from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = redact_url(str(getattr(exc, "reason", exc)))
        raise AdminEndpointUnavailable(
            f"POST {shown} failed within {timeout.total_seconds():g}s: {reason}"
        ) from exc
    if not 200 <= status < 300:
        raise AdminEndpointRefused(f"POST {shown} answered HTTP {status} (expected 2xx)")
    log.info("POST %s answered HTTP %d", shown, status)
    return status
