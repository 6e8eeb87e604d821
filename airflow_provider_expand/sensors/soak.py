"""``SoakSensor``: waits out the soak after the deploy without holding a worker slot.

The standard ``TimeDeltaSensor`` counts from the run's start; a long backfill would then eat into the soak.
This one counts from the ledger's ``deployed_at`` (or ``expanded_at`` without a deploy step).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any, cast

import pendulum
from airflow.providers.standard.sensors.time_delta import TimeDeltaSensor
from airflow.providers.standard.triggers.temporal import DateTimeTrigger
from airflow.sdk import Context

from airflow_provider_expand.engine.ledger.store import DEFAULT_SCHEMA, Ledger
from airflow_provider_expand.engine.lifecycle import Event, Lifecycle
from airflow_provider_expand.engine.soak import ContractWindow, soak_until
from airflow_provider_expand.guards import forward_only_noop
from airflow_provider_expand.hooks.postgres import postgres_connector
from airflow_provider_expand.retries import ClassifiedErrors
from airflow_provider_expand.templated import as_bool


class SoakSensor(ClassifiedErrors, TimeDeltaSensor):
    """Succeeds ``soak`` after the new code went live (and inside ``contract_window`` when given)."""

    template_fields: Sequence[str] = (*TimeDeltaSensor.template_fields, "is_dry_run")
    ui_color = "#fff3c4"

    def __init__(
        self,
        *,
        migration_id: str,
        postgres_conn_id: str,
        soak: dt.timedelta,
        contract_window: str | None = None,
        ledger_schema: str = DEFAULT_SCHEMA,
        dry_run: bool | str = False,
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("timeout", (soak + dt.timedelta(days=2)).total_seconds())
        kwargs.setdefault("poke_interval", min(max(soak.total_seconds() / 10, 1.0), 300.0))
        super().__init__(delta=soak, deferrable=deferrable, **kwargs)
        self.migration_id = migration_id
        self.postgres_conn_id = postgres_conn_id
        self.contract_window = contract_window
        self.window = ContractWindow.parse(contract_window) if contract_window else None
        self.ledger_schema = ledger_schema
        self.is_dry_run = dry_run

    def _derive_base_time(self, context: Context) -> dt.datetime:
        """The moment the new code went live, from the ledger."""
        ledger = Ledger(self.ledger_schema)
        with postgres_connector(self.postgres_conn_id)() as conn:
            record = ledger.get(conn, self.migration_id)
        live = record and (record.deployed_at or record.expanded_at)
        if not live:
            raise RuntimeError(
                f"migration {self.migration_id!r} has no deployed_at or expanded_at in the ledger "
                f"({self.ledger_schema}.migrations): the soak has nothing to count from"
            )
        return live

    def _target(self, context: Context) -> pendulum.DateTime:
        return soak_until(self._derive_base_time(context), self._resolve_delta(), self.window)

    def poke(self, context: Context) -> bool:
        target = self._target(context)
        left = target - pendulum.now("UTC")
        self.log.info(
            "Soak ends at %s (%s left)", target.isoformat(), left if left.total_seconds() > 0 else "none"
        )
        return left.total_seconds() <= 0

    def execute(self, context: Context) -> Any:
        if as_bool(self.is_dry_run):
            self.log.info("dry run: not waiting for the soak of %s", self._resolve_delta())
            return None
        log = cast(logging.Logger, self.log)
        if forward_only_noop(self.postgres_conn_id, self.ledger_schema, self.migration_id, self.task_id, log):
            return None
        self._enter_soak(context)
        if not self.deferrable:
            return super().execute(context)
        target = self._target(context)
        window = f", inside the contract window {self.window}" if self.window else ""
        if pendulum.now("UTC") >= target:
            self.log.info("Soak already over at %s%s", target.isoformat(), window)
            return None
        self.log.info("Soaking until %s%s; deferring (no worker slot held)", target.isoformat(), window)
        self.defer(
            trigger=DateTimeTrigger(moment=target), method_name="execute_complete", timeout=self.timeout
        )
        return None

    def _enter_soak(self, context: Context) -> None:
        """Reaching the soak means the backfills and index builds upstream all succeeded."""
        ledger = Ledger(self.ledger_schema)
        with postgres_connector(self.postgres_conn_id)() as conn:
            conn.autocommit = True
            lifecycle = Lifecycle(ledger)
            record = lifecycle.record(conn, self.migration_id)
            if record is None or record.phase != "soaking":  # a retried soak is soaking already
                lifecycle.move(conn, self.migration_id, Event.BACKFILLED)
            lifecycle.move(conn, self.migration_id, Event.SOAK_STARTED)
