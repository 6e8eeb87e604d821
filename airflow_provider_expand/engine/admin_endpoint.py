"""The application's own admin endpoint (the runbook's ``POST /admin/queues/pause``).

Pausing the BullMQ queues in Redis stops the workers; the app's endpoint also stops its schedulers and
cron producers, which Redis alone cannot reach. Only the standard library: one POST, a 2xx or an error.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any


class AdminEndpointError(RuntimeError):
    """The app's admin endpoint did not answer 2xx; the message names the URL (credentials removed)."""


def redact_url(url: str) -> str:
    """``url`` without its user:password part, for logs and error messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def validate_admin_url(url: str, what: str) -> str:
    """Refuse anything but an absolute http(s) URL, at DAG-parse time rather than mid-migration."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an absolute http:// or https:// URL, got {redact_url(url)!r}")
    return url


def _split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """urllib does not read user:password from a URL: send it as HTTP Basic auth instead."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url, {}
    user = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    bare = urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return bare, {"Authorization": f"Basic {token}"}


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
    target, headers = _split_credentials(url)
    headers.update({"Content-Type": "application/json", "User-Agent": "airflow-provider-expand"})
    request = urllib.request.Request(
        target, data=json.dumps(dict(payload)).encode(), method="POST", headers=headers
    )
    log.info("POST %s", shown)
    try:
        with _OPENER.open(request, timeout=timeout.total_seconds()) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        body = exc.read(500).decode("utf-8", "replace").strip()
        raise AdminEndpointError(
            f"POST {shown} answered HTTP {exc.code}{': ' + body if body else ''} (expected 2xx)"
        ) from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AdminEndpointError(
            f"POST {shown} failed within {timeout.total_seconds():g}s: {reason}"
        ) from exc
    if not 200 <= status < 300:
        raise AdminEndpointError(f"POST {shown} answered HTTP {status} (expected 2xx)")
    log.info("POST %s answered HTTP %d", shown, status)
    return status
