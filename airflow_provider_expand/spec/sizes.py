"""Sizes as people write them in a migration.yaml (``64MB``, ``512kB``, ``1GB``, ``50MB/s``, ``1048576``).

Units are PostgreSQL's (``kB``, ``MB``, ``GB``, ``TB``, 1024-based, case-insensitive; ``KiB``-style and
``B`` accepted too), so a value reads the same as in ``postgresql.conf``. Everything becomes an ``int`` of
bytes; a rate (``max_wal_rate``) is bytes per second and may end in ``/s``.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

from airflow_provider_expand.engine.health.units import format_size

_UNIT_BYTES = {
    "b": 1,
    "kb": 1024,
    "kib": 1024,
    "mb": 1024**2,
    "mib": 1024**2,
    "gb": 1024**3,
    "gib": 1024**3,
    "tb": 1024**4,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([a-z]+)?$")

HINT = "use 512kB, 64MB, 1GB (PostgreSQL's units, 1024-based) or a number of bytes"


def parse_size(value: object, *, rate: bool = False) -> int:
    """Turn a spec value into bytes; raises ``ValueError`` saying what is accepted."""
    what = "a rate" if rate else "a size"
    hint = f"{HINT}, per second (50MB or 50MB/s)" if rate else HINT
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{value!r} is not {what}: {hint}")
    if isinstance(value, int | float):
        number = float(value)
    else:
        text = value.strip().lower()
        if rate and text.endswith("/s"):
            text = text[:-2].rstrip()
        match = _SIZE.match(text)
        if not match or (match.group(2) and match.group(2) not in _UNIT_BYTES):
            raise ValueError(f"{value!r} is not {what}: {hint}")
        number = float(match.group(1)) * _UNIT_BYTES[match.group(2) or "b"]
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{value!r} is not {what}: it must be zero or more")
    return round(number)


def has_size_unit(text: str) -> bool:
    """Whether ``text`` ends in a size unit (``64MB``), as opposed to a time unit (``10s``)."""
    match = _SIZE.match(text.strip().lower())
    return bool(match and match.group(2) in _UNIT_BYTES)


def _spelled(value: int) -> str:
    return format_size(value).replace(" ", "")


Size = Annotated[
    int,
    BeforeValidator(parse_size),
    PlainSerializer(_spelled, return_type=str, when_used="json"),
]
"""A number of bytes (zero or more)."""

Rate = Annotated[
    int,
    BeforeValidator(lambda value: parse_size(value, rate=True)),
    PlainSerializer(lambda value: f"{_spelled(value)}/s", return_type=str, when_used="json"),
]
"""Bytes per second (zero or more)."""
