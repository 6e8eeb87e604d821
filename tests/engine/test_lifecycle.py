"""The migration's lifecycle against a real PostgreSQL: edges, guards, forward-only, the ledger's upgrade."""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from airflow_provider_expand.engine.database import Connector
from airflow_provider_expand.engine.errors import (
    DatabaseUnavailableError,
    DefinitiveError,
    GuardRefusedError,
)
from airflow_provider_expand.engine.ledger.store import LEDGER_VERSION, PHASES, Ledger, LedgerVersionError
from airflow_provider_expand.engine.lifecycle import (
    TRANSITIONS,
    Event,
    Lifecycle,
    forward_only,
    lifecycle_doc,
)

LOG = logging.getLogger("test")
REPO = Path(__file__).resolve().parents[2]


def _to_soaking(lifecycle: Lifecycle, conn: psycopg.Connection, mid: str = "m") -> None:
    for event in (Event.BEGIN, Event.EXPAND_STARTED, Event.EXPANDED, Event.BACKFILLED, Event.SOAK_STARTED):
        lifecycle.move(conn, mid, event, dag_id=mid, run_id="r1")


def test_a_migration_walks_its_phases_and_stamps_each_moment_once(pg_conn: psycopg.Connection) -> None:
    lifecycle = Lifecycle(Ledger())
    _to_soaking(lifecycle, pg_conn)
    record = lifecycle.move(pg_conn, "m", Event.CONTRACT_STARTED)
    assert record.phase == "contracting" and record.contract_started_at is not None
    assert record.soaked_at is not None and forward_only(record)
    again = lifecycle.move(pg_conn, "m", Event.CONTRACT_STARTED)  # a retried contract
    assert again.contract_started_at == record.contract_started_at
    lifecycle.move(pg_conn, "m", Event.CONTRACTED)
    done = lifecycle.move(pg_conn, "m", Event.COMPLETED)
    assert done.phase == "completed" and done.contracted_at is not None


def test_an_edge_not_in_the_table_is_refused_and_changes_nothing(pg_conn: psycopg.Connection) -> None:
    lifecycle = Lifecycle(Ledger())
    lifecycle.move(pg_conn, "m", Event.BEGIN)
    with pytest.raises(GuardRefusedError, match="m is pending: contracted is not allowed"):
        lifecycle.move(pg_conn, "m", Event.CONTRACTED)
    with pytest.raises(GuardRefusedError, match="start_over"):
        lifecycle.move(pg_conn, "m", Event.START_OVER)  # only after a rollback
    assert lifecycle.ledger.get(pg_conn, "m").phase == "pending"  # type: ignore[union-attr]
    assert issubclass(GuardRefusedError, DefinitiveError)


def test_after_the_contract_started_rollback_is_refused_and_failures_keep_the_phase(
    pg_conn: psycopg.Connection, pg_connect: Connector
) -> None:
    lifecycle = Lifecycle(Ledger())
    _to_soaking(lifecycle, pg_conn)
    assert lifecycle.refuse_rollback(lifecycle.record(pg_conn, "m")) is None
    lifecycle.move(pg_conn, "m", Event.CONTRACT_STARTED)
    lifecycle.ledger.start_step(pg_conn, "m", "contract")
    lifecycle.record_failure(pg_connect, "m", "contract", DefinitiveError("DROP INDEX failed"), LOG)
    record = lifecycle.record(pg_conn, "m")
    assert record is not None and record.phase == "contracting"  # not 'failed': forward-only
    assert lifecycle.ledger.step(pg_conn, "m", "contract").status == "failed"  # type: ignore[union-attr]
    refusal = lifecycle.refuse_rollback(record)
    assert refusal is not None and "forward-only" in refusal and "re-run" in refusal
    with pytest.raises(GuardRefusedError, match="contracting: rollback_started is not allowed"):
        lifecycle.move(pg_conn, "m", Event.ROLLBACK_STARTED)
    assert lifecycle.noop_reason(record, "backfill:products") is not None
    lifecycle.move(pg_conn, "m", Event.BEGIN, run_id="r2")  # a re-run resumes
    assert lifecycle.record(pg_conn, "m").phase == "contracting"  # type: ignore[union-attr]


def test_a_transient_failure_keeps_the_phase_a_definitive_one_fails(
    pg_conn: psycopg.Connection, pg_connect: Connector
) -> None:
    lifecycle = Lifecycle(Ledger())
    for event in (Event.BEGIN, Event.EXPAND_STARTED, Event.EXPANDED):
        lifecycle.move(pg_conn, "m", event)
    lifecycle.record_failure(pg_connect, "m", "backfill:t", DatabaseUnavailableError("lost", "57P01"), LOG)
    assert lifecycle.record(pg_conn, "m").phase == "expanded"  # type: ignore[union-attr]
    lifecycle.record_failure(pg_connect, "m", "backfill:t", ValueError("bad set"), LOG)
    assert lifecycle.record(pg_conn, "m").phase == "failed"  # type: ignore[union-attr]
    assert lifecycle.noop_reason(lifecycle.record(pg_conn, "m"), "backfill:t") is None
    lifecycle.move(pg_conn, "m", Event.ROLLBACK_STARTED)
    lifecycle.move(pg_conn, "m", Event.ROLLED_BACK)
    lifecycle.move(pg_conn, "m", Event.START_OVER, run_id="r2")
    after = lifecycle.record(pg_conn, "m")
    assert after is not None and after.phase == "pending" and after.expanded_at is None


_V1 = """
CREATE SCHEMA {s};
CREATE TABLE {s}.migrations (id text PRIMARY KEY, dag_id text, run_id text, phase text NOT NULL DEFAULT 'pending',
    expanded_at timestamptz, deployed_at timestamptz, backfilled_at timestamptz, soaked_at timestamptz,
    contracted_at timestamptz, rolled_back_at timestamptz, updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE {s}.steps (migration_id text NOT NULL, step text NOT NULL, part int NOT NULL DEFAULT 0,
    status text NOT NULL, started_at timestamptz, finished_at timestamptz, rows_done bigint NOT NULL DEFAULT 0,
    rows_total bigint, last_key text, batch_size int, error text, PRIMARY KEY (migration_id, step, part));
INSERT INTO {s}.migrations (id, phase, expanded_at) VALUES
    ('half_contracted', 'failed', now()), ('plain_failure', 'failed', now()), ('done', 'completed', now()),
    ('soaking', 'soaking', now());
INSERT INTO {s}.steps (migration_id, step, status, started_at, rows_done, last_key) VALUES
    ('half_contracted', 'contract', 'failed', now() - interval '1 hour', 1, '1:abc'),
    ('plain_failure', 'backfill:products', 'failed', now(), 10, '10');
"""


def test_a_first_release_ledger_is_upgraded_in_place(pg_conn: psycopg.Connection) -> None:
    """The first release overwrote the phase with 'failed' after a half-applied contract: the upgrade must
    see that contract step and make the migration forward-only, so a re-run can never run rollback.sql."""
    pg_conn.execute(sql.SQL(_V1).format(s=sql.Identifier("airflow_expand")))
    ledger = Ledger()
    assert ledger.version(pg_conn) == 1
    ledger.ensure(pg_conn)
    assert ledger.version(pg_conn) == LEDGER_VERSION
    lifecycle = Lifecycle(ledger)
    half = lifecycle.record(pg_conn, "half_contracted")
    assert half is not None and half.phase == "contracting" and half.contract_started_at is not None
    assert lifecycle.refuse_rollback(half) is not None
    plain = lifecycle.record(pg_conn, "plain_failure")
    assert plain is not None and plain.phase == "failed" and not forward_only(plain)
    assert forward_only(lifecycle.record(pg_conn, "done"))
    assert not forward_only(lifecycle.record(pg_conn, "soaking"))
    step = ledger.step(pg_conn, "plain_failure", "backfill:products")
    assert step is not None and step.last_key == "10"  # checkpoints survive the upgrade
    ledger.ensure(pg_conn)  # current: a no-op


def test_a_ledger_from_a_newer_release_is_refused(pg_conn: psycopg.Connection) -> None:
    ledger = Ledger()
    ledger.ensure(pg_conn)
    pg_conn.execute("UPDATE airflow_expand.ledger_version SET version = %s", (LEDGER_VERSION + 1,))
    with pytest.raises(LedgerVersionError, match="newer than this release"):
        ledger.ensure(pg_conn)


def test_every_phase_is_reachable_and_the_doc_is_generated_from_the_table() -> None:
    reached = {"pending"} | {target for _, target in TRANSITIONS.values() if target}
    assert reached == set(PHASES)  # the ledger's every phase
    doc = (REPO / "docs" / "lifecycle.md").read_text()
    assert doc == lifecycle_doc(), (
        "regenerate: python -m airflow_provider_expand.engine.lifecycle > docs/lifecycle.md"
    )
