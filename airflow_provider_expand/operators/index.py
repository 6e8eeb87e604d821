"""``ConcurrentIndexOperator`` and ``DropIndexConcurrentlyOperator``: Airflow glue over ``engine.index.build``.

The task log is the monitor: the engine logs the ``pg_stat_progress_create_index`` phase and counts
through ``self.log`` while the build runs. The return value (pushed to XCom) says what was done.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, cast

from airflow.sdk import BaseOperator, Context

from airflow_provider_expand.engine.index.build import IndexSpec, build_index, drop_index
from airflow_provider_expand.engine.index.spec import IndexSpecError
from airflow_provider_expand.engine.ledger.store import DEFAULT_SCHEMA
from airflow_provider_expand.guards import forward_only_noop
from airflow_provider_expand.hooks.postgres import postgres_connector
from airflow_provider_expand.retries import ClassifiedErrors
from airflow_provider_expand.templated import as_bool


def _as_timedelta(value: timedelta | float, field: str) -> timedelta:
    """Durations arrive as ``timedelta`` (the spec loader's type) or as a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    raise TypeError(f"{field} must be a timedelta or a number of seconds, got {value!r}")


class ConcurrentIndexOperator(ClassifiedErrors, BaseOperator):
    """Build ``CREATE [UNIQUE] INDEX CONCURRENTLY`` until a VALID index matching the spec exists.

    An invalid index of the same name is dropped concurrently and rebuilt (up to ``max_rebuilds``
    times); a valid one with another definition fails the task. ``dry_run`` (templated; the DAG's
    ``params.dry_run``) only logs the statements. It is stored as ``is_dry_run`` because
    ``BaseOperator.dry_run`` is a method.
    """

    template_fields: Sequence[str] = ("is_dry_run",)
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        migration_id: str,
        postgres_conn_id: str,
        name: str,
        table: str,
        columns: Sequence[str],
        unique: bool = False,
        where: str | None = None,
        using: str | None = None,
        max_rebuilds: int = 2,
        lock_timeout: timedelta = timedelta(seconds=2),
        ddl_retries: int = 20,
        progress_interval: timedelta = timedelta(seconds=5),
        dry_run: bool | str = False,
        ledger_schema: str = DEFAULT_SCHEMA,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.migration_id = migration_id
        self.postgres_conn_id = postgres_conn_id
        self.index_name = name
        self.table = table
        self.columns = list(columns)
        self.unique = unique
        self.where = where
        self.using = using
        self.max_rebuilds = max_rebuilds
        self.lock_timeout = _as_timedelta(lock_timeout, "lock_timeout")
        self.ddl_retries = ddl_retries
        self.progress_interval = _as_timedelta(progress_interval, "progress_interval")
        self.is_dry_run = dry_run
        self.ledger_schema = ledger_schema

    def execute(self, context: Context) -> dict[str, Any]:
        spec = IndexSpec(
            name=self.index_name,
            table=self.table,
            columns=tuple(self.columns),
            where=self.where or None,
            unique=self.unique,
            using=self.using or None,
        )
        dry_run = as_bool(self.is_dry_run)
        if not dry_run and forward_only_noop(
            self.postgres_conn_id,
            self.ledger_schema,
            self.migration_id,
            self.task_id,
            cast(logging.Logger, self.log),
        ):
            return {"index": self.index_name, "skipped": "the contract has started"}
        try:
            result = build_index(
                postgres_connector(self.postgres_conn_id),
                spec,
                migration_id=self.migration_id,
                log=cast(logging.Logger, self.log),
                max_rebuilds=self.max_rebuilds,
                lock_timeout=self.lock_timeout,
                ddl_retries=self.ddl_retries,
                progress_interval=self.progress_interval,
                dry_run=dry_run,
                ledger_schema=self.ledger_schema,
            )
        except IndexSpecError as exc:
            if not dry_run:
                raise
            # a dry run does not apply the expand, so the columns this index covers may not exist yet
            self.log.warning("dry run: cannot check this index before the expand is applied: %s", exc)
            return {"dry_run": True, "unchecked": str(exc)}
        return result.as_dict()


class DropIndexConcurrentlyOperator(ClassifiedErrors, BaseOperator):
    """``DROP INDEX CONCURRENTLY IF EXISTS`` with lock retries, for the contract phase; idempotent."""

    template_fields: Sequence[str] = ("is_dry_run",)
    ui_color = "#fce8e6"

    def __init__(
        self,
        *,
        migration_id: str,
        postgres_conn_id: str,
        name: str,
        schema: str | None = None,
        lock_timeout: timedelta = timedelta(seconds=2),
        ddl_retries: int = 20,
        progress_interval: timedelta = timedelta(seconds=5),
        dry_run: bool | str = False,
        ledger_schema: str = DEFAULT_SCHEMA,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.migration_id = migration_id
        self.postgres_conn_id = postgres_conn_id
        self.index_name = name
        self.index_schema = schema
        self.lock_timeout = _as_timedelta(lock_timeout, "lock_timeout")
        self.ddl_retries = ddl_retries
        self.progress_interval = _as_timedelta(progress_interval, "progress_interval")
        self.is_dry_run = dry_run
        self.ledger_schema = ledger_schema

    def execute(self, context: Context) -> dict[str, Any]:
        result = drop_index(
            postgres_connector(self.postgres_conn_id),
            self.index_name,
            migration_id=self.migration_id,
            log=cast(logging.Logger, self.log),
            schema=self.index_schema,
            lock_timeout=self.lock_timeout,
            ddl_retries=self.ddl_retries,
            progress_interval=self.progress_interval,
            dry_run=as_bool(self.is_dry_run),
            ledger_schema=self.ledger_schema,
        )
        return result.as_dict()
