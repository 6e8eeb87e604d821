"""Credentials in the spec's URLs registered with Airflow's secrets masker, the one place that does so.

Registered in the operators' ``__init__`` (a literal URL, before anything renders or logs) and again after
rendering (a URL that a template produced), so the task log, the rendered-template view (Airflow redacts
rendered fields with the masker's registered secrets) and XComs show ``***``. The engine formats URLs with
:func:`~airflow_provider_expand.engine.redact.redact_url` on top of that, Airflow or not.
"""

from __future__ import annotations

from collections.abc import Sequence

import jinja2
from airflow.sdk import BaseOperator, Context
from airflow.sdk.log import mask_secret, redact

from airflow_provider_expand.engine.redact import (
    redact_url,
    restore_userinfo,
    set_aside_userinfo,
    url_secrets,
)


def mask_url_secrets(*urls: object) -> None:
    """Register the user info and password of every URL given (None and non-URLs are ignored)."""
    for url in urls:
        if isinstance(url, str):
            for secret in url_secrets(url):
                mask_secret(secret)


def url_field(url: str | None) -> tuple[str | None, str | None]:
    """A URL for a templated field, which Airflow stores as it is in the serialized DAG: registered with
    the masker, its literal user info set aside (``(field value, user info)``; put back by :func:`real_url`)."""
    if url is None:
        return None, None
    mask_url_secrets(url)
    return set_aside_userinfo(url)


def real_url(url: str | None, userinfo: str | None) -> str | None:
    """The URL to call: the rendered field with the user info :func:`url_field` set aside put back."""
    return None if url is None else restore_userinfo(url, userinfo)


def masked_text(text: str) -> str:
    """``text`` with registered secrets and URL user info replaced: for what no log handler masks (mails)."""
    return redact_url(str(redact(text)))


class MasksUrlFields(BaseOperator):
    """An operator whose templated ``url_fields`` may render to URLs with credentials: masked once rendered."""

    url_fields: Sequence[str] = ()

    def render_template_fields(self, context: Context, jinja_env: jinja2.Environment | None = None) -> None:
        super().render_template_fields(context, jinja_env)
        mask_url_secrets(*(getattr(self, name, None) for name in self.url_fields))
