"""Linting a whole migration folder: phases see what expand did; the example migration lints clean."""

from __future__ import annotations

from pathlib import Path

from airflow_provider_expand.engine.lint import lint_migration
from airflow_provider_expand.engine.lint.linter import lint_operations
from airflow_provider_expand.spec import load_migration

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "dags" / "migrations" / "products_title_to_name"


def make(
    tmp_path: Path, expand: str, contract: str = "", rollback: str | None = None, extra: str = ""
) -> Path:
    """A migration folder; without ``rollback`` it has no rollback.sql (nothing to compare expand with)."""
    folder = tmp_path / "m"
    folder.mkdir()
    files = {"expand": expand, "contract": contract, "rollback": rollback}
    (folder / "migration.yaml").write_text(
        "id: m\npostgres_conn_id: app_db\n"
        + "".join(f"{phase}: {phase}.sql\n" for phase, text in files.items() if text is not None)
        + extra
    )
    for phase, text in files.items():
        if text is not None:
            (folder / f"{phase}.sql").write_text(text)
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
        "ALTER TABLE products DROP COLUMN IF EXISTS title;\n"
    )
    extra = "indexes:\n  - {name: idx_products_name, table: products, columns: [name]}\n"
    found = lint_migration(load_migration(make(tmp_path, expand, rollback=rollback, extra=extra)))
    assert [(f.file, f.line, f.code) for f in found] == [("m/rollback.sql", 5, "EX104")]
    assert "column products.title" in found[0].message


def test_rollback_of_an_app_migrator_is_not_second_guessed(tmp_path: Path) -> None:
    folder = make(tmp_path, "", rollback="ALTER TABLE products DROP COLUMN IF EXISTS name;\n")
    (folder / "migration.yaml").write_text(
        "id: m\npostgres_conn_id: app_db\nexpand: {image: 'app:2', command: [pnpm, migrate]}\nrollback: rollback.sql\n"
    )
    assert lint_migration(load_migration(folder)) == []


def test_findings_name_the_folder_and_file(tmp_path: Path) -> None:
    found = lint_migration(load_migration(make(tmp_path, "ALTER TABLE products DROP COLUMN title;\n")))
    assert [str(f).split(" — ")[0] for f in found] == [
        "m/expand.sql:1: EX101 drops column products.title in expand, while the old code may still use it; "
        "dropping belongs in contract"
    ]


# -- what contract must keep, what rollback must undo: the rules that compare files ------------------------

EXPAND = (
    "ALTER TABLE products ADD COLUMN IF NOT EXISTS name text;\n"
    "CREATE FUNCTION sync() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;\n"
    "CREATE TRIGGER sync BEFORE UPDATE ON products FOR EACH ROW EXECUTE FUNCTION sync();\n"
    "CREATE TABLE product_tags (id bigint, tag text);\n"
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS product_tags_tag ON product_tags (tag);\n"
)
BACKFILL = "backfill:\n  - {table: products, set: 'name = title, price_cents = round(price * 100)', where: name IS NULL}\n"
INDEXES = "indexes:\n  - {name: idx_products_name, table: products, columns: [name]}\n"


def found(folder: Path) -> list[tuple[str, int, str]]:
    return [(f.file, f.line, f.code) for f in lint_migration(load_migration(folder))]


def test_contract_that_drops_what_the_new_code_reads_is_a_finding(tmp_path: Path) -> None:
    contract = (
        "DROP TRIGGER sync ON products;\n"  # expand's helpers go in contract: fine
        "DROP FUNCTION sync();\n"
        "ALTER TABLE products DROP COLUMN title;\n"  # the old side of the change: fine
        "ALTER TABLE products DROP COLUMN name;\n"  # expand created it for the new code
        "ALTER TABLE products DROP COLUMN price_cents;\n"  # the backfill writes it
        "DROP INDEX CONCURRENTLY idx_products_name;\n"  # an index step built it
        "DROP TABLE product_tags;\n"
    )
    folder = make(tmp_path, EXPAND, contract, extra=BACKFILL + INDEXES)
    result = lint_migration(load_migration(folder))
    assert [(f.line, f.code) for f in result] == [(4, "EX902"), (5, "EX902"), (6, "EX902"), (7, "EX902")]
    assert "(m/expand.sql:1 created it)" in result[0].message
    assert "(the backfill of products writes it)" in result[1].message
    assert "(indexes: builds it for the new code)" in result[2].message
    assert result[0].message.startswith("drops column products.name in contract, but the new code reads it")


def test_contract_may_replace_what_expand_created_under_the_same_name(tmp_path: Path) -> None:
    # squawk's rename-by-view: expand adds a view with the new name, contract swaps the table in for it
    expand = "CREATE VIEW items AS SELECT * FROM products;\n"
    contract = "DROP VIEW items;\nALTER TABLE products RENAME TO items;\n"
    assert [c for _, _, c in found(make(tmp_path, expand, contract))] == ["EX102"]


def test_rollback_that_leaves_expand_behind_is_a_finding_at_the_expand_statement(tmp_path: Path) -> None:
    rollback = "DROP TRIGGER IF EXISTS sync ON products;\n"  # not the function, the column, the table
    folder = make(tmp_path, EXPAND, rollback=rollback, extra=INDEXES)
    result = lint_migration(load_migration(folder))
    assert [(f.file, f.line, f.code) for f in result] == [
        ("m/expand.sql", 1, "EX903"),
        ("m/expand.sql", 2, "EX903"),
        ("m/expand.sql", 4, "EX903"),
        ("m/migration.yaml", 7, "EX903"),
    ]
    assert result[0].message.startswith("creates column products.name, which rollback.sql never drops")
    assert "ALTER TABLE ... DROP COLUMN IF EXISTS" in result[0].message
    assert "indexes: builds idx_products_name on products" in result[3].message


def test_rollback_that_undoes_everything_is_clean(tmp_path: Path) -> None:
    rollback = (
        "DROP INDEX CONCURRENTLY IF EXISTS idx_products_name;\n"
        "DROP TABLE IF EXISTS product_tags;\n"  # takes its index along
        "DROP FUNCTION IF EXISTS sync() CASCADE;\n"  # takes the trigger along
        "ALTER TABLE products DROP COLUMN IF EXISTS name;\n"
    )
    assert found(make(tmp_path, EXPAND, rollback=rollback, extra=INDEXES)) == []


def test_an_index_goes_with_the_column_it_is_on(tmp_path: Path) -> None:
    rollback = "ALTER TABLE products DROP COLUMN IF EXISTS name;\n"
    assert (
        found(
            make(tmp_path, "ALTER TABLE products ADD COLUMN name text;\n", rollback=rollback, extra=INDEXES)
        )
        == []
    )


def test_rollback_must_bring_back_what_expand_dropped(tmp_path: Path) -> None:
    expand = (
        "-- expand: allow EX101 because the column is unused since release 41\n"
        "ALTER TABLE products DROP COLUMN legacy_code;\n"
        "-- expand: allow EX101 because new rows get their price from the trigger\n"
        "ALTER TABLE products ALTER COLUMN price DROP DEFAULT;\n"
    )
    result = lint_migration(load_migration(make(tmp_path, expand, rollback="SELECT 1;\n")))
    assert [(f.line, f.code) for f in result] == [(2, "EX904"), (4, "EX904")]
    assert "column products.legacy_code, which rollback.sql never brings back" in result[0].message
    assert "the default of products.price" in result[1].message
    rollback = (
        "ALTER TABLE products ADD COLUMN IF NOT EXISTS legacy_code text;\n"
        "ALTER TABLE products ALTER COLUMN price SET DEFAULT 0;\n"
    )
    (tmp_path / "again").mkdir()
    assert lint_migration(load_migration(make(tmp_path / "again", expand, rollback=rollback))) == []


def test_a_rollback_gap_can_be_allowed_at_the_expand_statement(tmp_path: Path) -> None:
    expand = (
        "-- expand: allow EX903 because the audit table stays for the compliance team either way\n"
        "CREATE TABLE audit_log (id bigint, at timestamptz);\n"
    )
    assert found(make(tmp_path, expand, rollback="SELECT 1;\n")) == []


def test_raw_sql_operation_without_down_and_its_sql_linted() -> None:
    operations = [
        {"add_column": {"table": "products", "column": {"name": "name", "type": "text"}}},
        {"sql": {"up": "CREATE INDEX products_title ON products (title)"}},
        {"sql": {"up": "CREATE TABLE t (id bigint)", "down": "DROP TABLE t"}},
        {"raw_sql": {"up": "ALTER TABLE products DROP COLUMN title", "onComplete": True}},
    ]
    result = lint_operations(operations, "m/migration.yaml")
    assert [(f.file, f.code) for f in result] == [
        ("m/migration.yaml#operations[1].sql", "EX906"),
        ("m/migration.yaml#operations[1].sql.up", "EX201"),
        ("m/migration.yaml#operations[2].sql.down", "EX905"),
    ]
    assert result[0].message.startswith("operations[1].sql has up but no down")
    clean = [{"sql": {"up": "CREATE TABLE IF NOT EXISTS t (id bigint)", "down": "DROP TABLE IF EXISTS t"}}]
    assert lint_operations(clean) == []
