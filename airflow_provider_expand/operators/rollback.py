"""``RollbackOperator``: the runbook's 'Rollback Rapid' — rollback.sql, only when there is something to undo.

Its trigger rule is ONE_FAILED, and Airflow counts an upstream_failed as failed: a preflight or drain
failure (nothing applied yet) would trigger it too. The ledger tells whether expand ever started.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowSkipException

from airflow_provider_expand.engine.ledger import Ledger
from airflow_provider_expand.operators.connections import postgres_connector
from airflow_provider_expand.operators.phase_sql import PhaseSQLOperator

# Phases in which the schema may hold part or all of the expand.
_EXPANDED = {"expanding", "expanded", "deployed", "backfilled", "soaking", "rolling_back", "failed"}


class RollbackOperator(PhaseSQLOperator):
    """Runs rollback.sql when the ledger shows the expand started; skips (nothing to undo) otherwise."""

    ui_color = "#f8d7da"

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("phase", "rollback")
        super().__init__(**kwargs)

    def execute(self, context: Context) -> dict[str, object]:
        ledger = Ledger(self.ledger_schema)
        with postgres_connector(self.postgres_conn_id)() as conn:
            record = ledger.get(conn, self.migration_id) if ledger.installed(conn) else None
            expand_step = ledger.step(conn, self.migration_id, "expand") if record else None
        if record is None or (record.phase not in _EXPANDED and expand_step is None):
            raise AirflowSkipException(
                f"nothing to roll back: the expand of {self.migration_id} never started "
                f"(ledger phase {record.phase if record else 'absent'})"
            )
        if record.phase in ("contracting", "completed"):
            raise RuntimeError(
                f"refusing rollback.sql: {self.migration_id} is {record.phase}; the contract has begun and the "
                "new code relies on the expanded schema. Use the restore_from_backup DAG as a last resort."
            )
        self.log.warning("rolling back %s from phase %s", self.migration_id, record.phase)
        return super().execute(context)
