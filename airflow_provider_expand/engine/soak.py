"""When the soak ends: the runbook's "min 24h" after the new code went live, optionally pushed to the
next contract window (e.g. ``02:00-05:00`` UTC) so the contract runs when traffic is low.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import pendulum

_WINDOW = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")


@dataclass(frozen=True)
class ContractWindow:
    """A daily UTC time window; it may wrap midnight (``22:00-02:00``)."""

    start: dt.time
    end: dt.time

    @classmethod
    def parse(cls, text: str) -> ContractWindow:
        match = _WINDOW.match(text.strip())
        if not match:
            raise ValueError(f"contract window {text!r} is not of the form HH:MM-HH:MM (UTC)")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
            raise ValueError(f"contract window {text!r} has an hour above 23 or a minute above 59")
        if (h1, m1) == (h2, m2):
            raise ValueError(f"contract window {text!r} is empty")
        return cls(dt.time(h1, m1), dt.time(h2, m2))

    def contains(self, moment: dt.time) -> bool:
        if self.start < self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M} UTC"


def soak_until(
    base: dt.datetime, soak: dt.timedelta, window: ContractWindow | None = None
) -> pendulum.DateTime:
    """The first moment at least ``soak`` after ``base`` that lies inside ``window`` (if any)."""
    earliest = pendulum.instance(base).in_timezone("UTC") + soak
    if window is None or window.contains(earliest.time()):
        return earliest
    start = earliest.replace(hour=window.start.hour, minute=window.start.minute, second=0, microsecond=0)
    return start if start > earliest else start.add(days=1)
