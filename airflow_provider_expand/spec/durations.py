"""Durations as people write them in a migration.yaml (``500ms``, ``5m``, ``24h``, ``PT5M``, ``30``).

Everything becomes a plain :class:`datetime.timedelta`, so the engine never sees a unit string.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Annotated

import pendulum
from pydantic import AfterValidator, BeforeValidator, PlainSerializer

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")
_COMPOUND = re.compile(r"^(?:\d+(?:\.\d+)?\s*(?:ms|s|m|h|d)\s*)+$")
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")

HINT = "use 500ms, 30s, 5m, 1h, 24h (or 1h30m), an ISO 8601 duration such as PT5M, or a number of seconds"


def parse_duration(value: object) -> dt.timedelta:
    """Turn a spec value into a timedelta; raises ``ValueError`` saying what is accepted."""
    if isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration: {HINT}")
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _seconds_of_text(value.strip())
    else:
        raise ValueError(f"{value!r} is not a duration: {HINT}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r} is not a duration: it must be zero or more")
    return dt.timedelta(seconds=seconds)


def _seconds_of_text(text: str) -> float:
    if _NUMBER.match(text):
        return float(text)
    lowered = text.lower()
    if _COMPOUND.match(lowered):
        return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _PART.findall(lowered))
    if lowered.startswith("p"):
        try:
            parsed = pendulum.parse(text.upper())
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{text!r} is not a duration: {HINT}") from exc
        if not isinstance(parsed, pendulum.Duration):
            raise ValueError(f"{text!r} is not a duration: {HINT}")
        if parsed.years or parsed.months:
            raise ValueError(f"{text!r} uses months or years, whose length varies: give days or hours")
        return float(parsed.total_seconds())
    raise ValueError(f"{text!r} is not a duration: {HINT}")


def format_duration(value: dt.timedelta) -> str:
    """The shortest spec spelling of ``value`` (``24h``, ``1h30m``, ``500ms``), for logs and docs."""
    millis = round(value.total_seconds() * 1000)
    if millis == 0:
        return "0s"
    if millis % 1000:
        return f"{millis}ms"
    seconds = millis // 1000
    parts = []
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _positive(value: dt.timedelta) -> dt.timedelta:
    if value <= dt.timedelta(0):
        raise ValueError("must be longer than zero")
    return value


Duration = Annotated[
    dt.timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
"""A duration of zero or more."""

PositiveDuration = Annotated[Duration, AfterValidator(_positive)]
"""A duration longer than zero (a ``lock_timeout`` of 0 would mean: wait forever)."""
