"""Migrations written the way pgroll's users write them (tests/fixtures/pgroll, JSON and YAML), imported with
``airflow-expand import-pgroll`` and run one after the other on one database: the result is the schema a
person would write by hand, and each migration's contract drops the previous one's version schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_provider_expand.cli import main
from airflow_provider_expand.spec import load_migration
from tests.engine.operations.conftest import Migration, build, dump_schema, new_code, old_code, rows

FILES = sorted((Path(__file__).resolve().parents[2] / "fixtures" / "pgroll").iterdir())
AFTER = """
CREATE TABLE shops (id bigserial PRIMARY KEY, domain varchar(255) NOT NULL UNIQUE);
CREATE TABLE products (
  id bigserial CONSTRAINT items_pkey PRIMARY KEY,
  shop_id bigint NOT NULL CONSTRAINT fk_items_shop REFERENCES shops (id),
  name text NOT NULL,
  sku text NOT NULL CONSTRAINT items_sku_key UNIQUE,
  stock integer NOT NULL DEFAULT 0 CONSTRAINT stock_not_negative CHECK (stock >= 0)
);
ALTER SEQUENCE products_id_seq RENAME TO items_id_seq;
COMMENT ON COLUMN products.sku IS 'stock keeping unit';
CREATE INDEX idx_products_in_stock ON products (shop_id, stock DESC) WHERE stock > 0;
"""


def test_imported_pgroll_migrations_run_one_after_the_other(
    tmp_path: Path, pg_dsn: str, reference_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["import-pgroll", *map(str, FILES), "--dir", str(tmp_path), "--conn-id", "app_db"]) == 0
    folders = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert [f.name for f in folders] == [f.stem for f in FILES]
    previous: str | None = None
    for folder in folders:
        spec = load_migration(folder)
        migration = Migration(pg_dsn, [dict([e]) for e in _raw(spec)], spec.id)
        migration.run()
        with old_code(pg_dsn) as conn:
            schemas = {s for (s,) in rows(conn, "SELECT nspname FROM pg_namespace WHERE nspname LIKE '0%'")}
        assert spec.id in schemas and (previous is None or previous not in schemas), schemas
        previous = spec.id
    with new_code(pg_dsn, previous or "") as conn:  # the last version schema serves the new code
        assert rows(conn, "SELECT sku, stock FROM products WHERE id = 3") == [("SKU-3", 0)]
    build(reference_dsn, AFTER)
    assert dump_schema(pg_dsn) == dump_schema(reference_dsn)


def _raw(spec: object) -> list[tuple[str, dict[str, object]]]:
    """The spec's operations back as pgroll wrote them (name -> fields, by alias)."""
    return [
        (name, fields.model_dump(by_alias=True, exclude_unset=True))
        for name, fields in spec.operation_entries()  # type: ignore[attr-defined]
    ]


def test_import_refuses_a_bad_file_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "07_bad.json"
    bad.write_text('{"operations": [{"rename_column": {"table": "t", "from": "a"}}]}')
    assert main(["import-pgroll", str(bad), "--dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "07_bad.json: cannot be imported" in err and "operations[0].rename_column.to: required" in err
    assert not (tmp_path / "out" / "07_bad").exists()


def test_plan_prints_every_phase_and_the_steps(
    tmp_path: Path, pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["import-pgroll", str(FILES[0]), str(FILES[2]), "--dir", str(tmp_path)]) == 0
    Migration.of(pg_dsn, (FILES[0]).read_text().split("operations:", 1)[1], "first").run()
    capsys.readouterr()
    assert main(["plan", str(tmp_path / FILES[2].stem), "--conn", pg_dsn]) == 0
    out = capsys.readouterr().out
    for expected in (
        "-- expand: ",
        "-- contract: ",
        "-- rollback: ",
        'ALTER TABLE "public"."items" ADD COLUMN "sku" text',
        "-- backfill.items: UPDATE items SET",
        "-- index.items_sku_key: CREATE UNIQUE INDEX CONCURRENTLY",
        'CREATE VIEW "03_add_sku"."items"',
        "VALIDATE CONSTRAINT",
        "index.items_sku_key",  # the DAG's steps
    ):
        assert expected in out, expected
    # no lint errors (warnings, such as varchar(n), are shown as "lint warning:" and do not fail the plan)
    assert not [line for line in out.splitlines() if line.startswith("lint: ")], out
    # without a database the plan says what it needs
    assert main(["plan", str(tmp_path / FILES[2].stem)]) == 1
    assert "table 'items' does not exist" in capsys.readouterr().out
