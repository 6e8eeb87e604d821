"""The planner and the spec: bad input fails before anything runs, with the file, operation index and field;
the operations of one migration see each other's changes; the phases wrap them as documented."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from airflow_provider_expand.engine.operations.base import PlanContext
from airflow_provider_expand.engine.operations.errors import (
    ColumnExistsError,
    ColumnNotFoundError,
    OperationError,
    TableNotFoundError,
)
from airflow_provider_expand.engine.operations.planner import build_operations, contract_fates, plan_migration
from airflow_provider_expand.engine.operations.schema import Column, Schema, Table
from airflow_provider_expand.spec import SpecError, load_migration
from airflow_provider_expand.spec.operations import parse_operations
from tests.engine.operations.conftest import Migration, build, old_code, rows


def _schema() -> Schema:
    table = Table("products", "products")
    for name in ("id", "title", "price"):
        table.add_column(Column(name, name, "integer", nullable=name != "id"))
    return Schema(tables={"products": table}, schemas=("public",))


def _plan(ops: str, schema: Schema | None = None) -> object:
    ctx = PlanContext("m1", source="m1/migration.yaml")
    import yaml

    return plan_migration(
        build_operations(parse_operations(yaml.safe_load(ops)), ctx), schema or _schema(), ctx
    )


def _spec(tmp_path: Path, ops: str) -> None:
    folder = tmp_path / "m1"
    folder.mkdir(exist_ok=True)
    text = "id: m1\npostgres_conn_id: db\noperations:\n" + textwrap.indent(textwrap.dedent(ops), "  ")
    (folder / "migration.yaml").write_text(text)
    load_migration(folder)


@pytest.mark.parametrize(
    ("ops", "message"),
    [
        ("- add_colum: {table: t}", r"operations\[0\]\.add_colum: unknown key \(did you mean 'add_column'\?"),
        (
            "- rename_column: {table: t, from: a, to: b, column: c}",
            r"operations\[0\]\.rename_column\.column: unknown key",
        ),
        ("- rename_column: {table: t, from: a}", r"operations\[0\]\.rename_column\.to: required"),
        (
            "- drop_table: {name: a}\n- add_column: {table: t, up: 'upper(', column: {name: c, type: text}}",
            r"operations\[1\]\.add_column\.up: is not one SQL expression: does not parse",
        ),
        (
            "- add_column: {table: t, up: '1; DROP TABLE t', column: {name: c, type: text}}",
            r"operations\[0\]\.add_column\.up: is not one SQL expression",
        ),
        ("- sql: {up: 'CREATE TABL x'}", r"operations\[0\]\.sql\.up: line 1: does not parse"),
        (
            "- drop_table: {name: a}\n- sql: {up: 'SELECT 1'}",
            r"operations\[1\]\.sql\.up: a sql operation without onComplete must be the only operation",
        ),
        (
            "- sql: {up: 'SELECT 1', down: 'SELECT 2', onComplete: true}",
            r"operations\[0\]\.sql: down: not allowed",
        ),
        (
            "- {drop_table: {name: a}, drop_index: {name: b}}",
            r"operations\[0\]: each operation is a mapping with exactly one key",
        ),
    ],
)
def test_bad_input_names_file_index_and_field(tmp_path: Path, ops: str, message: str) -> None:
    with pytest.raises(SpecError, match=r"m1/migration\.yaml: " + message):
        _spec(tmp_path, ops)


def test_operations_or_phase_files_not_both(tmp_path: Path) -> None:
    folder = tmp_path / "m1"
    folder.mkdir()
    (folder / "expand.sql").write_text("SELECT 1;")
    (folder / "migration.yaml").write_text(
        "id: m1\npostgres_conn_id: db\nexpand: expand.sql\noperations:\n  - drop_table: {name: a}\n"
    )
    with pytest.raises(SpecError, match="operations: give operations or expand, not both"):
        load_migration(folder)


@pytest.mark.parametrize(
    ("ops", "error", "message"),
    [
        (
            "- drop_table: {name: orders}",
            TableNotFoundError,
            r"operations\[0\]\.drop_table\.name: table 'orders'",
        ),
        (
            "- rename_column: {table: products, from: name, to: label}",
            ColumnNotFoundError,
            r"operations\[0\]\.rename_column\.from: column 'name' does not exist in table 'products'",
        ),
        (  # two operations that conflict: the second sees what the first did
            "- drop_column: {table: products, column: price}\n- rename_column: {table: products, from: price, to: cost}",
            ColumnNotFoundError,
            r"operations\[1\]\.rename_column\.from: column 'price' does not exist",
        ),
        (
            "- rename_column: {table: products, from: title, to: name}\n"
            "- add_column: {table: products, column: {name: name, type: text, nullable: true}}",
            ColumnExistsError,
            r"operations\[1\]\.add_column\.column\.name: table 'products' already has a column named 'name'",
        ),
        (
            "- rename_table: {from: products, to: items}\n- drop_column: {table: products, column: price}",
            TableNotFoundError,
            r"operations\[1\]\.drop_column\.table: table 'products' does not exist",
        ),
    ],
)
def test_catalog_errors_name_file_index_and_field(
    ops: str, error: type[OperationError], message: str
) -> None:
    with pytest.raises(error, match=r"^m1/migration\.yaml: " + message):
        _plan(ops)


def test_second_operation_sees_the_first(pg_dsn: str) -> None:
    build(pg_dsn, "CREATE TABLE products (id int PRIMARY KEY, title text)")
    plan = Migration.of(
        pg_dsn,
        """
- rename_table: {from: products, to: items}
- rename_column: {table: items, from: title, to: name}
- add_column: {table: items, up: "upper(name)", column: {name: label, type: text, nullable: true}}
""",
    ).plan()
    views = plan.expand[-1].statements[-1]
    assert views == (
        'CREATE VIEW "m1"."items" WITH (security_invoker = true) AS SELECT "id", "title" AS "name", "label" '
        'FROM "public"."products"'
    )
    assert [b.physical for b in plan.backfills] == ["products"]
    assert plan.contract[-1].statements[-2:] == (
        plan.contract[-1].statements[-2],
        plan.contract[-1].statements[-1],
    )
    assert plan.contract[-1].statements[-2].endswith('RENAME COLUMN "title" TO "name"')
    assert plan.contract[-1].statements[-1].endswith('"public"."products" RENAME TO "items"')


def test_bad_operation_changes_nothing(pg_dsn: str) -> None:
    build(pg_dsn, "CREATE TABLE products (id int PRIMARY KEY, title text)")
    migration = Migration.of(
        pg_dsn,
        """
- add_column: {table: products, column: {name: ok, type: text, nullable: true}}
- rename_column: {table: products, from: missing, to: other}
""",
    )
    with pytest.raises(ColumnNotFoundError, match=r"operations\[1\]\.rename_column\.from"):
        migration.expand()
    with old_code(pg_dsn) as conn:
        assert rows(conn, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'ok'") == [
            (0,)
        ]
        assert rows(conn, "SELECT count(*) FROM pg_namespace WHERE nspname = 'm1'") == [(0,)]
        assert rows(conn, "SELECT to_regclass('airflow_expand.operation_snapshots')") == [
            (None,)
        ]  # no snapshot


def test_contract_fates_compose_the_renames_and_drops_in_order() -> None:
    """What the verify after the contract follows: each table by its name before the migration."""
    ops = build_operations(
        parse_operations(
            [
                {"rename_table": {"from": "a", "to": "b"}},
                {"rename_table": {"from": "b", "to": "c"}},
                {"drop_table": {"name": "d"}},
                {"rename_table": {"from": "e", "to": "f"}},
                {"drop_table": {"name": "f"}},
                {"drop_column": {"table": "g", "column": "x", "down": "1"}},
            ]
        ),
        PlanContext(migration_id="m1"),
    )
    assert contract_fates(ops) == {"a": "c", "d": None, "e": None}
