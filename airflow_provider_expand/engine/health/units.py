"""Sizes and durations as the gates' log lines write them (``12 MB``, ``3.2 s``, ``4m10s``)."""

from __future__ import annotations


def format_size(value: float) -> str:
    """``12582912`` -> ``12 MB``: the unit that keeps the number readable (1024-based, as PostgreSQL)."""
    for unit, size in (("TB", 1024**4), ("GB", 1024**3), ("MB", 1024**2), ("kB", 1024)):
        if abs(value) >= size:
            number = value / size
            return f"{number:.0f} {unit}" if number >= 10 or number == int(number) else f"{number:.1f} {unit}"
    return f"{value:.0f} B"


def format_seconds(seconds: float) -> str:
    """``3.2 s`` below a minute, ``4m10s`` / ``1h2m`` above."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    return f"{minutes}m{secs}s" if secs else f"{minutes}m"
