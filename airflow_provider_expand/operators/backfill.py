"""``BatchBackfillOperator``: Airflow glue over ``engine.backfill.run`` (the runbook's 'Migrare Date').

One task backfills one partition; with ``partitions > 1`` the DAG maps it over ``partition`` so the key
ranges run in parallel on as many workers. A retry (or a new run) resumes from the ledger checkpoint.
The task log is the monitor: rows done / estimated total, rows per second, batch size and ETA at least
every 5 s. Migration phases are the DAG's business, not this task's. Failures leave as the engine's errors
(``engine/errors.py``), so the DAG's retry policy retries the transient ones and fails at once on the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, cast

from airflow.sdk import BaseOperator, Context

from airflow_provider_expand.engine.backfill.run import BackfillInputError, BackfillSpec, run_backfill
from airflow_provider_expand.engine.errors import DatabaseStatementError
from airflow_provider_expand.engine.health.settings import HealthSettings
from airflow_provider_expand.engine.ledger.store import DEFAULT_SCHEMA, Ledger
from airflow_provider_expand.guards import forward_only_noop
from airflow_provider_expand.hooks.postgres import postgres_connector
from airflow_provider_expand.retries import ClassifiedErrors
from airflow_provider_expand.templated import as_bool

# undefined column / table: what a dry run meets before the expand that adds them has been applied
_UNDEFINED_SQLSTATES = ("42703", "42P01")


def _whole(value: object, field: str) -> int:
    """Templated numbers arrive as ints (native rendering) or as their text."""
    if isinstance(value, bool):
        raise BackfillInputError(field, f"must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise BackfillInputError(field, f"must be an integer, got {value!r}") from None


def _duration(value: object, field: str) -> timedelta:
    """Durations arrive as ``timedelta`` (the spec loader's type) or as a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    raise BackfillInputError(field, f"must be a timedelta or a number of seconds, got {value!r}")


class BatchBackfillOperator(ClassifiedErrors, BaseOperator):
    """Run ``UPDATE <table> SET <set> WHERE <where>`` in short batches (``SKIP LOCKED`` where the app holds
    rows), resumably.

    ``batch_size`` and ``dry_run`` are templated (the DAG's trigger params); strings such as ``"500"``
    or ``"False"`` are accepted too. ``dry_run`` is stored as ``is_dry_run`` because
    ``BaseOperator.dry_run`` is a method. ``set``/``where``/``table``/``key`` are deliberately not
    templated: SQL comes from the migration file only, never from trigger params.
    """

    template_fields: Sequence[str] = ("batch_size", "is_dry_run")
    ui_color = "#e6f4ea"

    def __init__(
        self,
        *,
        migration_id: str,
        postgres_conn_id: str,
        table: str,
        set: str,
        where: str | None,
        key: str | Sequence[str] | None = None,
        batch_size: int | str = 10_000,
        target_batch_time: timedelta = timedelta(milliseconds=50),
        pause: timedelta = timedelta(0),
        partitions: int = 1,
        health: dict[str, Any] | None = None,
        partition: int = 0,
        dry_run: bool | str = False,
        ledger_schema: str = DEFAULT_SCHEMA,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.migration_id = migration_id
        self.postgres_conn_id = postgres_conn_id
        self.table = table
        self.set = set
        self.where = where
        self.key = key
        self.batch_size = batch_size
        self.target_batch_time = target_batch_time
        self.pause = pause
        self.partitions = partitions
        self.health = health
        self.partition = partition
        self.is_dry_run = dry_run
        self.ledger_schema = ledger_schema

    def spec(self) -> BackfillSpec:
        """The engine's spec from this task's (rendered) fields."""
        return BackfillSpec(
            table=self.table,
            set=self.set,
            where=self.where,
            key=(self.key if isinstance(self.key, str) else tuple(self.key)) if self.key else None,
            batch_size=_whole(self.batch_size, "batch_size"),
            target_batch_time=_duration(self.target_batch_time, "target_batch_time"),
            pause=_duration(self.pause, "pause"),
            partitions=_whole(self.partitions, "partitions"),
        )

    def health_settings(self) -> HealthSettings:
        """The health gates' limits (``HealthSettings.as_dict`` from the DAG factory; None: the defaults)."""
        try:
            return HealthSettings.from_dict(self.health)
        except (TypeError, ValueError) as exc:
            raise BackfillInputError("health", str(exc)) from None

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            dry_run = as_bool(self.is_dry_run)
        except ValueError as exc:
            raise BackfillInputError("dry_run", str(exc)) from None
        step = f"backfill:{self.table}"
        if not dry_run and forward_only_noop(
            self.postgres_conn_id, self.ledger_schema, self.migration_id, step, cast(logging.Logger, self.log)
        ):
            return {"table": self.table, "skipped": "the contract has started"}
        try:
            result = run_backfill(
                postgres_connector(self.postgres_conn_id),
                self.spec(),
                migration_id=self.migration_id,
                log=cast(logging.Logger, self.log),
                partition=_whole(self.partition, "partition"),
                dry_run=dry_run,
                ledger=Ledger(self.ledger_schema),
                health=self.health_settings(),
            )
        except (BackfillInputError, DatabaseStatementError) as exc:
            if not dry_run or (
                isinstance(exc, DatabaseStatementError) and exc.sqlstate not in _UNDEFINED_SQLSTATES
            ):
                raise
            # a dry run does not apply the expand, so the columns this step fills may not exist yet
            self.log.warning("dry run: cannot check this backfill before the expand is applied: %s", exc)
            return {"dry_run": True, "unchecked": str(exc)}
        return result.as_dict()
