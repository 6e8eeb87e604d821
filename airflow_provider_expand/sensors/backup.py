"""``BackupFreshnessSensor``: the runbook's "backup < 1 h, verified" as a gate before the migration."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any, cast

from airflow.sdk import BaseSensorOperator, Context, PokeReturnValue
from airflow.sdk.exceptions import AirflowSensorTimeout

from airflow_provider_expand.engine.backup.dump import DEFAULT_PATTERN, BackupVerdict, judge_backup
from airflow_provider_expand.hooks.backup_store import backup_store
from airflow_provider_expand.retries import ClassifiedErrors


class BackupFreshnessSensor(ClassifiedErrors, BaseSensorOperator):
    """Succeeds when the newest ``pattern`` file in ``directory`` is younger than ``max_age``, is read in
    full by ``pg_restore``, and lists ``TABLE DATA`` for every table of ``must_contain``; returns its path.

    ``directory`` is a local absolute path or an Airflow object storage URL (``s3://<conn_id>@bucket/prefix``),
    read as a stream from there. A missing directory, an unknown connection or an unreadable file fails at
    once: waiting would not fix any of them.
    """

    template_fields: Sequence[str] = ("directory", "pattern", "must_contain")
    ui_color = "#dbe9f6"

    def __init__(
        self,
        *,
        directory: str,
        max_age: dt.timedelta,
        pattern: str = DEFAULT_PATTERN,
        must_contain: Sequence[str] = (),
        pg_bin_dir: str | None = None,
        verify_data: bool = True,
        poke_interval: float | dt.timedelta = 30.0,
        **kwargs: Any,
    ) -> None:
        if not isinstance(max_age, dt.timedelta) or max_age.total_seconds() <= 0:
            raise ValueError(f"max_age must be a positive timedelta, got {max_age!r}")
        kwargs.setdefault("timeout", dt.timedelta(minutes=30))
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.directory = directory
        self.max_age = max_age
        self.pattern = pattern
        self.must_contain = list(must_contain)
        self.pg_bin_dir = pg_bin_dir
        self.verify_data = verify_data
        self.last_verdict: BackupVerdict | None = None

    def poke(self, context: Context) -> bool | PokeReturnValue:
        verdict = judge_backup(
            backup_store(self.directory),
            max_age=self.max_age,
            log=cast(logging.Logger, self.log),
            pattern=self.pattern,
            must_contain=self.must_contain,
            bin_dir=self.pg_bin_dir,
            verify_data=self.verify_data,
        )
        self.last_verdict = verdict
        if verdict.fresh:
            self.log.info("backup is fresh: %s", verdict.reason)
            return PokeReturnValue(is_done=True, xcom_value=str(verdict.path))
        self.log.warning("backup is not fresh: %s", verdict.reason)
        return False

    def execute(self, context: Context) -> Any:
        try:
            return super().execute(context)
        except AirflowSensorTimeout as exc:
            if self.last_verdict is None:
                raise
            raise AirflowSensorTimeout(
                f"no fresh backup after {dt.timedelta(seconds=self.timeout)}: {self.last_verdict.reason}"
            ) from exc
