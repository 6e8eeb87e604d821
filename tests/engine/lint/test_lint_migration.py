"""Linting a whole migration folder: phases see what expand did; the example migration lints clean."""

from __future__ import annotations

from pathlib import Path

from airflow_provider_expand.engine.lint import lint_migration
from airflow_provider_expand.spec import load_migration

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "dags" / "migrations" / "products_title_to_name"


def make(tmp_path: Path, expand: str, contract: str = "", rollback: str = "", extra: str = "") -> Path:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "migration.yaml").write_text(
        "id: m\npostgres_conn_id: app_db\nexpand: expand.sql\ncontract: contract.sql\nrollback: rollback.sql\n"
        + extra
    )
    (folder / "expand.sql").write_text(expand)
    (folder / "contract.sql").write_text(contract)
    (folder / "rollback.sql").write_text(rollback)
    return folder


def test_the_example_migration_lints_clean() -> None:
    assert lint_migration(load_migration(EXAMPLE)) == []


def test_contract_validates_a_check_that_expand_added_not_valid(tmp_path: Path) -> None:
    expand = "ALTER TABLE products ADD COLUMN name text;\nALTER TABLE products ADD CONSTRAINT nn CHECK (name IS NOT NULL) NOT VALID;\n"
    contract = (
        "ALTER TABLE products VALIDATE CONSTRAINT nn;\nALTER TABLE products ALTER COLUMN name SET NOT NULL;\n"
    )
    assert lint_migration(load_migration(make(tmp_path, expand, contract))) == []


def test_contract_without_the_validate_is_still_a_finding(tmp_path: Path) -> None:
    expand = "ALTER TABLE products ADD CONSTRAINT nn CHECK (name IS NOT NULL) NOT VALID;\n"
    contract = "ALTER TABLE products ALTER COLUMN name SET NOT NULL;\n"
    found = lint_migration(load_migration(make(tmp_path, expand, contract)))
    assert [(f.file, f.line, f.code) for f in found] == [("m/contract.sql", 1, "EX304")]


def test_tables_created_by_expand_are_existing_tables_by_contract(tmp_path: Path) -> None:
    expand = "CREATE TABLE tags (id bigint, name text);\n"
    contract = "CREATE INDEX tags_name ON tags (name);\n"
    found = lint_migration(load_migration(make(tmp_path, expand, contract)))
    assert [f.code for f in found] == ["EX201"]


def test_rollback_may_drop_only_what_expand_created(tmp_path: Path) -> None:
    expand = (
        "ALTER TABLE products ADD COLUMN name text;\n"
        "CREATE FUNCTION sync() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;\n"
        "CREATE TRIGGER sync BEFORE UPDATE ON products FOR EACH ROW EXECUTE FUNCTION sync();\n"
    )
    rollback = (
        "DROP INDEX CONCURRENTLY IF EXISTS idx_products_name;\n"
        "DROP TRIGGER IF EXISTS sync ON products;\n"
        "DROP FUNCTION IF EXISTS sync();\n"
        "ALTER TABLE products DROP COLUMN IF EXISTS name;\n"
        "ALTER TABLE products DROP COLUMN title;\n"
    )
    extra = "indexes:\n  - {name: idx_products_name, table: products, columns: [name]}\n"
    found = lint_migration(load_migration(make(tmp_path, expand, rollback=rollback, extra=extra)))
    assert [(f.file, f.line, f.code) for f in found] == [("m/rollback.sql", 5, "EX104")]
    assert "column products.title" in found[0].message


def test_rollback_of_an_app_migrator_is_not_second_guessed(tmp_path: Path) -> None:
    folder = make(tmp_path, "", rollback="ALTER TABLE products DROP COLUMN name;\n")
    (folder / "migration.yaml").write_text(
        "id: m\npostgres_conn_id: app_db\nexpand: {image: 'app:2', command: [pnpm, migrate]}\nrollback: rollback.sql\n"
    )
    assert lint_migration(load_migration(folder)) == []


def test_findings_name_the_folder_and_file(tmp_path: Path) -> None:
    found = lint_migration(load_migration(make(tmp_path, "ALTER TABLE products DROP COLUMN title;\n")))
    assert [str(f).split(" — ")[0] for f in found] == [
        "m/expand.sql:1: EX101 drops column products.title in expand, while the old code may still use it"
    ]
