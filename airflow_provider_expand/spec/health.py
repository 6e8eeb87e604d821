"""``health:`` of migration.yaml: the limits of the gates the backfill reads between batches.

At the top level it applies to every backfill; a backfill's own ``health:`` overrides single keys. ``off``
(YAML's false) switches a gate off. Sizes use :mod:`spec.sizes`, durations :mod:`spec.durations`.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field

from airflow_provider_expand.engine.health.settings import HealthSettings
from airflow_provider_expand.spec.checks import STRICT
from airflow_provider_expand.spec.durations import PositiveDuration, parse_duration
from airflow_provider_expand.spec.sizes import Rate, has_size_unit, parse_size

Off = Literal[False]


def _lag(value: object) -> object:
    """``64MB`` (bytes behind) or ``10s`` (time behind): a unit is required, a bare number is ambiguous."""
    if value is False or isinstance(value, dt.timedelta):
        return value
    if isinstance(value, str) and has_size_unit(value):
        return parse_size(value)
    if isinstance(value, str) and not value.strip().replace(".", "", 1).isdigit():
        try:
            return parse_duration(value)
        except ValueError:
            pass
    if isinstance(value, str) and value.strip().replace(".", "", 1).isdigit():
        raise ValueError(f"{value!r} needs a unit: bytes (64MB) or time (10s)")
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(f"{value!r} needs a unit: bytes (64MB) or time (10s)")
    raise ValueError(f"{value!r} is not a replica lag: give bytes (64MB, 1GB) or a time (10s, 1m), or off")


ReplicaLag = Annotated[int | dt.timedelta | Off, BeforeValidator(_lag)]


class HealthSpec(BaseModel):
    """The top-level ``health:``; every key has the default a spec that says nothing gets."""

    model_config = STRICT

    max_replica_lag: ReplicaLag = 64 * 1024 * 1024
    max_wal_rate: Rate | Off = False
    max_archive_backlog: Annotated[int, Field(ge=0)] | Off = 42
    max_transaction_age: PositiveDuration | Off = dt.timedelta(minutes=10)
    wraparound_vacuum: bool = True
    max_hold: PositiveDuration = dt.timedelta(minutes=30)
    vacuum: bool = True

    def settings(self, override: BackfillHealthSpec | None = None) -> HealthSettings:
        """The engine's settings: this spec, with the keys ``override`` sets replacing its own."""
        values: dict[str, Any] = self.model_dump()
        if override is not None:
            values.update(override.model_dump(exclude_none=True))
        lag = values["max_replica_lag"]

        def on(value: Any) -> Any:
            return None if value is False else value

        return HealthSettings(
            max_replica_lag_bytes=lag if isinstance(lag, int) and lag is not False else None,
            max_replica_lag_time=lag if isinstance(lag, dt.timedelta) else None,
            max_wal_rate=on(values["max_wal_rate"]),
            max_archive_backlog=on(values["max_archive_backlog"]),
            max_transaction_age=on(values["max_transaction_age"]),
            wraparound_vacuum=values["wraparound_vacuum"],
            max_hold=values["max_hold"],
            vacuum=values["vacuum"],
        )


class BackfillHealthSpec(BaseModel):
    """A backfill's own ``health:``: the keys it gives replace the top level's."""

    model_config = STRICT

    max_replica_lag: ReplicaLag | None = None
    max_wal_rate: Rate | Off | None = None
    max_archive_backlog: Annotated[int, Field(ge=0)] | Off | None = None
    max_transaction_age: PositiveDuration | Off | None = None
    wraparound_vacuum: bool | None = None
    max_hold: PositiveDuration | None = None
    vacuum: bool | None = None
