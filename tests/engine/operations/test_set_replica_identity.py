"""set_replica_identity on real PostgreSQL (pgroll's example 29): set in the expand, put back by rollback."""

from __future__ import annotations

import psycopg
import pytest

from airflow_provider_expand.engine.operations import errors
from airflow_provider_expand.engine.operations.plan import MigrationPlan
from tests.engine.operations.phases import dump, plan, rollback_then_contract, versions, write_together

SETUP = "CREATE TABLE fruits (id int PRIMARY KEY, name text NOT NULL, size int); CREATE UNIQUE INDEX fruits_name ON fruits (name);"


@pytest.mark.parametrize(
    ("identity", "expected"),
    [({"type": "index", "index": "fruits_pkey"}, "i"), ({"type": "full"}, "f"), ({"type": "nothing"}, "n")],
)
def test_set_replica_identity(
    pg_conn: psycopg.Connection, pg_dsn: str, pg_server_dsn: str, identity: dict[str, str], expected: str
) -> None:
    pg_conn.execute(SETUP)
    op = {"set_replica_identity": {"table": "fruits", "identity": identity}}

    def soak(migration: MigrationPlan) -> None:
        write_together(
            pg_dsn,
            migration,
            "INSERT INTO fruits VALUES (%s, 'o')",
            "INSERT INTO fruits (id, name) SELECT x, 'n' || x FROM (SELECT %s::int AS x) s",
            range(1, 2),
        )
        with versions(pg_dsn, migration) as (old, new):
            assert old.execute(
                "SELECT relreplident::text FROM pg_class WHERE relname = 'fruits'"
            ).fetchone() == (expected,)
            assert new.execute("SELECT count(*) FROM fruits").fetchone() == (2,)

    reference = {
        "i": "ALTER TABLE fruits REPLICA IDENTITY USING INDEX fruits_pkey;",
        "f": "ALTER TABLE fruits REPLICA IDENTITY FULL;",
        "n": "ALTER TABLE fruits REPLICA IDENTITY NOTHING;",
    }
    rollback_then_contract(pg_dsn, pg_server_dsn, f"m_ri_{expected}", [op], soak, SETUP + reference[expected])


def test_bad_input(pg_conn: psycopg.Connection, pg_dsn: str) -> None:
    pg_conn.execute(SETUP + "CREATE INDEX fruits_size ON fruits (size);")
    before = dump(pg_dsn)
    cases = [
        (
            {"table": "fruits", "identity": {"type": "index", "index": "nope"}},
            errors.IndexNotFoundError,
            "identity.index",
        ),
        (
            {"table": "fruits", "identity": {"type": "index", "index": "fruits_size"}},
            errors.OperationError,
            "identity.index",
        ),
        ({"table": "nope", "identity": {"type": "full"}}, errors.TableNotFoundError, "table"),
    ]
    for fields, error, field in cases:
        with pytest.raises(error) as caught:
            plan(pg_dsn, "m_bad", [{"set_replica_identity": fields}])
        assert caught.value.field == field, fields
        assert f"operations[0].set_replica_identity.{field}:" in str(caught.value)
    with pytest.raises(ValueError, match="index"):
        plan(pg_dsn, "m_bad", [{"set_replica_identity": {"table": "fruits", "identity": {"type": "index"}}}])
    assert dump(pg_dsn) == before
