"""What a task asks the migration's lifecycle before it works: has the contract started (forward-only)?

A re-run after a failed contract must let every step before the contract *succeed* without doing
anything (a skip would cascade into the contract and skip it too); each such step calls
:func:`forward_only_noop` first.
"""

from __future__ import annotations

import logging

from airflow_provider_expand.engine.ledger.store import Ledger
from airflow_provider_expand.engine.lifecycle import Lifecycle
from airflow_provider_expand.hooks.postgres import postgres_connector


def forward_only_noop(
    postgres_conn_id: str, ledger_schema: str, migration_id: str, step: str, log: logging.Logger
) -> bool:
    """True (and says why in the log) when ``step`` must do nothing because the contract has started."""
    lifecycle = Lifecycle(Ledger(ledger_schema))
    with postgres_connector(postgres_conn_id)() as conn:
        reason = lifecycle.noop_reason(lifecycle.record(conn, migration_id), step)
    if reason is None:
        return False
    log.info(reason)
    return True
