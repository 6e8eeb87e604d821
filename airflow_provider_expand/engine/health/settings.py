"""The ``health:`` of a migration (top level, overridable per backfill) in engine types.

``None`` switches a gate off. The defaults are the ones a spec that sets nothing gets (docs/health.md says
why each): they never hold a healthy database, so a backfill runs at full speed until one says stop.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

MB = 1024 * 1024


@dataclass(frozen=True)
class HealthSettings:
    """Limits of the gates; a gate whose limit is ``None`` (or ``False``) is not read."""

    max_replica_lag_bytes: int | None = 64 * MB
    max_replica_lag_time: dt.timedelta | None = None
    max_wal_rate: int | None = None  # bytes per second
    max_archive_backlog: int | None = 42  # WAL segments waiting for archive_command
    max_transaction_age: dt.timedelta | None = dt.timedelta(minutes=10)
    wraparound_vacuum: bool = True  # hold while autovacuum runs on the table to prevent wraparound
    max_hold: dt.timedelta = dt.timedelta(minutes=30)
    vacuum: bool = True  # plain VACUUM of the table as the backfill's dead rows pile up

    def as_dict(self) -> dict[str, Any]:
        """Plain values (durations in seconds), as an operator argument that Airflow can serialize."""
        return {
            k: v.total_seconds() if isinstance(v, dt.timedelta) else v
            for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> HealthSettings:
        """The inverse of :meth:`as_dict`; unknown keys are refused (a typo would switch nothing off)."""
        if not data:
            return cls()
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown health setting(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, value in data.items():
            is_duration = name in ("max_replica_lag_time", "max_transaction_age", "max_hold")
            if is_duration and isinstance(value, int | float) and not isinstance(value, bool):
                value = dt.timedelta(seconds=value)
            values[name] = value
        return cls(**values)
