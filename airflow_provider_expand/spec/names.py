"""The names a spec may hold: SQL identifiers, queue names, connection ids, URLs.

They are checked here, at load time, so nothing malformed ever reaches ``psycopg.sql.Identifier``, a
Redis key or an HTTP client; quoting still happens where they are used.
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator

from airflow_provider_expand.engine.redact import redact_url

_IDENT = r"[A-Za-z_][A-Za-z0-9_$]*"
_IDENTIFIER = re.compile(rf"^{_IDENT}$")
_QUALIFIED = re.compile(rf"^{_IDENT}(?:\.{_IDENT})?$")
_SETTING = re.compile(rf"^{_IDENT}(?:\.{_IDENT})?$")
_MIGRATION_ID = re.compile(r"^[a-z0-9_]+$")
_QUEUE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_CONN_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_CONTAINER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

MAX_IDENTIFIER_LENGTH = 63  # NAMEDATALEN - 1: PostgreSQL silently truncates longer names


def _identifier(value: str) -> str:
    if not _IDENTIFIER.match(value):
        raise ValueError(
            f"{value!r} is not a plain identifier (letters, digits, _ and $, not starting with a digit)"
        )
    if len(value) > MAX_IDENTIFIER_LENGTH:
        raise ValueError(
            f"{value!r} is longer than {MAX_IDENTIFIER_LENGTH} characters; PostgreSQL would cut it"
        )
    return value


def _qualified(value: str) -> str:
    if not _QUALIFIED.match(value):
        raise ValueError(f"{value!r} is not a table name (an identifier, optionally schema.table)")
    for part in value.split("."):
        _identifier(part)
    return value


def _setting(value: str) -> str:
    if not _SETTING.match(value):
        raise ValueError(f"{value!r} is not a setting name such as app.current_shop_id")
    return value


def _migration_id(value: str) -> str:
    if not _MIGRATION_ID.match(value):
        raise ValueError(f"{value!r} is not a migration id: use lower-case letters, digits and _")
    if len(value) > 200:
        raise ValueError("is longer than 200 characters")
    return value


def _queue(value: str) -> str:
    if not _QUEUE.match(value):
        raise ValueError(
            f"{value!r} is not a queue name (letters, digits, _ . -; no spaces, colons or glob characters)"
        )
    return value


def _conn_id(value: str) -> str:
    if not _CONN_ID.match(value):
        raise ValueError(f"{value!r} is not an Airflow connection id")
    return value


def _container(value: str) -> str:
    if not _CONTAINER.match(value):
        raise ValueError(f"{value!r} is not a container name")
    return value


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{redact_url(value)!r} is not an http(s) URL")
    return value


def _text(value: object) -> object:
    """YAML reads ``value: 42`` as a number; a setting value is text either way."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


Identifier = Annotated[str, AfterValidator(_identifier)]
QualifiedName = Annotated[str, AfterValidator(_qualified)]
SettingName = Annotated[str, AfterValidator(_setting)]
MigrationId = Annotated[str, AfterValidator(_migration_id)]
QueueName = Annotated[str, AfterValidator(_queue)]
ConnId = Annotated[str, AfterValidator(_conn_id)]
ContainerName = Annotated[str, AfterValidator(_container)]
HttpUrl = Annotated[str, AfterValidator(_url)]
SettingValue = Annotated[str, BeforeValidator(_text)]
