"""The migration view's reader: the specs of a migrations folder, each named connection's ledger read
through the Airflow connection (``AIRFLOW_CONN_*``); an unreachable one is reported, not fatal."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from airflow_provider_expand.engine.ledger.store import Ledger
from airflow_provider_expand.engine.lifecycle import Event, Lifecycle
from tests.dags.harness import copy_migration


def _soaking(conn: psycopg.Connection, migration_id: str) -> None:
    ledger = Ledger()
    ledger.ensure(conn)
    lifecycle = Lifecycle(ledger)
    lifecycle.move(conn, migration_id, Event.EXPAND_STARTED, dag_id=migration_id, run_id="manual__1")
    lifecycle.move(conn, migration_id, Event.EXPANDED)


def test_the_plugin_reads_every_ledger_and_reports_one_it_cannot_reach(
    pg_conn: psycopg.Connection, pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_expand.plugin.sources import load_specs, read_overview

    _soaking(pg_conn, "good_migration")
    copy_migration(tmp_path, "good_migration", postgres_conn_id="view_good", soak="10m")
    copy_migration(tmp_path, "far_migration", postgres_conn_id="view_unreachable")
    (tmp_path / "migrations" / "broken").mkdir()
    (tmp_path / "migrations" / "broken" / "migration.yaml").write_text("id: [not, an, id]\n")
    info = psycopg.conninfo.conninfo_to_dict(pg_dsn)
    monkeypatch.setenv(
        "AIRFLOW_CONN_VIEW_GOOD", f"postgres://{info['user']}@{info['host']}:{info['port']}/{info['dbname']}"
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_VIEW_UNREACHABLE", "postgres://nobody@127.0.0.1:1/none?connect_timeout=2"
    )

    specs = load_specs([tmp_path / "migrations"])
    overview = read_overview(specs)

    assert sorted(s.id for s in specs) == ["far_migration", "good_migration"]  # the broken one left out
    assert [m["id"] for m in overview.migrations] == ["good_migration"]
    entry = overview.migrations[0]
    assert entry["postgres_conn_id"] == "view_good" and entry["soak"]["duration_seconds"] == 600
    errors = {s["postgres_conn_id"]: s["error"] for s in overview.ledgers}
    assert errors["view_good"] is None
    assert errors["view_unreachable"] and "OperationalError" in errors["view_unreachable"]
