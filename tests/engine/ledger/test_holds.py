"""Several migrations in flight: begin refuses one whose tables another holds, naming it and its phase;
disjoint migrations run side by side; a hold ends with the contract or the rollback."""

from __future__ import annotations

import psycopg
import pytest

from airflow_provider_expand.cli import main
from airflow_provider_expand.engine.ledger.holds import TableHeldError, claim, in_flight
from airflow_provider_expand.engine.ledger.store import Ledger
from airflow_provider_expand.engine.lifecycle import Event, Lifecycle


def _begin(conn: psycopg.Connection, migration_id: str, tables: list[str]) -> None:
    Ledger().ensure(conn)
    claim(conn, "airflow_expand", migration_id, tables)
    Lifecycle(Ledger()).move(conn, migration_id, Event.BEGIN)


def test_begin_refuses_a_table_held_by_another_migration(pg_conn: psycopg.Connection) -> None:
    _begin(pg_conn, "rename_title", ["products", "public.shops"])
    Lifecycle(Ledger()).move(pg_conn, "rename_title", Event.EXPAND_STARTED)
    _begin(pg_conn, "orders_index", ["orders"])  # disjoint: both in flight
    with pytest.raises(
        TableHeldError, match=r"public\.products is held by migration rename_title \(phase expanding\)"
    ):
        claim(pg_conn, "airflow_expand", "add_sku", ["Products", "reviews"])
    assert in_flight(pg_conn, "airflow_expand") == {
        ("orders_index", "pending"): ["public.orders"],
        ("rename_title", "expanding"): ["public.products", "public.shops"],
    }
    # once rename_title is rolled back, its tables are free again
    lifecycle = Lifecycle(Ledger())
    lifecycle.move(pg_conn, "rename_title", Event.ROLLBACK_STARTED)
    lifecycle.move(pg_conn, "rename_title", Event.ROLLED_BACK)
    claim(pg_conn, "airflow_expand", "add_sku", ["products"])
    assert ("rename_title", "rolled_back") not in in_flight(pg_conn, "airflow_expand")


def test_status_lists_the_migrations_in_flight(
    pg_conn: psycopg.Connection, pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--conn", pg_dsn]) == 0
    assert "no migration in flight" in capsys.readouterr().out
    _begin(pg_conn, "rename_title", ["products"])
    assert main(["status", "--conn", pg_dsn]) == 0
    assert "rename_title: pending, holds public.products" in capsys.readouterr().out
