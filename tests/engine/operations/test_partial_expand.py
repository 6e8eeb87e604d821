"""A failure in the middle of the expand: the groups before it stay committed (checkpointed), and the
rollback, planned from the same snapshot, removes exactly them: the schema is as before."""

from __future__ import annotations

import pytest

from airflow_provider_expand.engine.errors import DefinitiveError
from airflow_provider_expand.engine.ledger.store import Ledger
from tests.engine.operations.conftest import Migration, build, dump_schema, old_code, rows

BEFORE = """
CREATE TABLE users (id bigserial PRIMARY KEY, name text NOT NULL);
INSERT INTO users (name) SELECT 'u' || g FROM generate_series(1, 20) g;
"""
OPS = """
- create_table: {name: teams, columns: [{name: id, type: bigserial, pk: true}]}
- add_column: {table: users, up: upper(name), column: {name: handle, type: text, nullable: true}}
- add_column:
    table: users
    column: {name: score, type: int, nullable: true, check: {name: score_ok, constraint: "no_such_function(score)"}}
"""


def test_rollback_after_a_failed_expand_restores_the_schema(pg_dsn: str, reference_dsn: str) -> None:
    build(pg_dsn, BEFORE)
    build(reference_dsn, BEFORE)
    migration = Migration.of(pg_dsn, OPS)
    with pytest.raises(DefinitiveError, match="no_such_function"):
        migration.expand()
    with old_code(pg_dsn) as conn:  # the first groups were committed before the failing one
        assert rows(conn, "SELECT to_regclass('public.teams') IS NOT NULL") == [(True,)]
        step = Ledger().step(conn, "m1", "expand")
        assert step is not None and step.status == "failed"
    migration.rollback()
    assert dump_schema(pg_dsn) == dump_schema(reference_dsn)
    with old_code(pg_dsn) as conn:
        assert rows(conn, "SELECT to_regclass('airflow_expand.operation_snapshots') IS NOT NULL") == [(True,)]
        assert rows(conn, "SELECT count(*) FROM airflow_expand.operation_snapshots") == [(0,)]  # discarded
