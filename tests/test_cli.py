"""The airflow-expand console script: lint exit codes, the scaffold, and status from a real ledger."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from airflow_provider_expand.cli import main
from airflow_provider_expand.engine.ledger.store import Ledger
from airflow_provider_expand.engine.lifecycle import Event, Lifecycle
from airflow_provider_expand.engine.lint import lint_migration
from airflow_provider_expand.spec import load_migration

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "dags" / "migrations" / "products_title_to_name"
SCRIPT = Path(sys.executable).parent / "airflow-expand"


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A copy of the example migration to break at will."""
    return Path(shutil.copytree(EXAMPLE, tmp_path / "migrations" / EXAMPLE.name))


def test_lint_clean_exits_0(example: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", str(example)]) == 0
    out, err = capsys.readouterr()
    assert out == "" and err.strip() == "clean: 3 SQL files"
    assert main(["lint", str(example.parent)]) == 0  # a root of migrations
    assert main(["lint", str(example / "migration.yaml"), str(example / "expand.sql")]) == 0


def test_lint_findings_exit_1_with_file_line_code_and_alternative(
    example: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expand = example / "expand.sql"
    expand.write_text(expand.read_text() + "\nCREATE INDEX idx_products_title ON products (title);\n")
    rollback = example / "rollback.sql"  # which undoes it (EX903 otherwise)
    rollback.write_text(rollback.read_text() + "DROP INDEX CONCURRENTLY IF EXISTS idx_products_title;\n")
    assert main(["lint", str(example)]) == 1
    out, err = capsys.readouterr()
    line = len(expand.read_text().splitlines())
    assert out.splitlines() == [
        f"products_title_to_name/expand.sql:{line}: EX201 builds idx_products_title on products without "
        "CONCURRENTLY: writes to it wait for the whole build — CREATE INDEX CONCURRENTLY IF NOT EXISTS (the "
        "runner rebuilds it if it is left invalid), or list it under indexes: in migration.yaml (built "
        "concurrently, checked valid)"
    ]
    assert err.strip() == "1 finding(s) in 3 SQL files"


def test_lint_a_lone_sql_file_takes_its_phase_from_the_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sql = tmp_path / "0042_contract_migration.sql"
    sql.write_text("ALTER TABLE products DROP COLUMN title;\n")
    assert main(["lint", str(sql)]) == 0  # drops are what contract is for
    assert main(["lint", "--phase", "expand", str(sql)]) == 1
    assert f"{sql}:1: EX101 drops column products.title in expand" in capsys.readouterr().out
    other = tmp_path / "changes.sql"
    other.write_text("SELECT 1;\n")
    assert main(["lint", str(other)]) == 2
    assert "cannot tell its phase from the name; pass --phase" in capsys.readouterr().err


def test_lint_spec_errors_and_bad_paths_exit_2(
    example: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = example / "migration.yaml"
    spec.write_text(spec.read_text().replace("batch_size: 10000", "batch_size: 0"))
    assert main(["lint", str(example)]) == 2
    assert capsys.readouterr().err.splitlines()[0] == (
        "products_title_to_name/migration.yaml: backfill[0].batch_size: must be greater than 0"
    )
    assert main(["lint", str(tmp_path / "nowhere")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["lint", str(tmp_path / "empty")]) == 2
    assert "no migration.yaml in it or below it" in capsys.readouterr().err
    assert main(["lint"]) == 2
    assert main(["lint", "--phase", "sideways", str(example)]) == 2  # argparse's own usage error
    assert main(["frobnicate"]) == 2


def test_lint_rules_lists_every_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", "--rules"]) == 0
    out = capsys.readouterr().out
    for code in ("EX001", "EX101", "EX201", "EX304", "EX401", "EX601", "EX701"):
        assert f"\n{code}  " in f"\n{out}"


def test_the_console_script_is_installed_and_exits_with_the_code() -> None:
    clean = subprocess.run([str(SCRIPT), "lint", str(EXAMPLE)], capture_output=True, text=True, timeout=120)
    assert (clean.returncode, clean.stdout) == (0, "")
    bad = subprocess.run(
        [str(SCRIPT), "lint", "--phase", "expand", str(EXAMPLE / "contract.sql")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1 and "EX101" in bad.stdout


def test_new_scaffolds_a_folder_that_loads_and_lints_clean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["new", "add_shop_plan", "--dir", str(tmp_path), "--conn-id", "app_db"]) == 0
    folder = tmp_path / "add_shop_plan"
    assert sorted(p.name for p in folder.iterdir()) == [
        "contract.sql",
        "expand.sql",
        "migration.yaml",
        "rollback.sql",
    ]
    spec = load_migration(folder)
    assert (spec.id, spec.postgres_conn_id, spec.soak) == ("add_shop_plan", "app_db", dt.timedelta(hours=24))
    assert lint_migration(spec) == []
    assert main(["lint", str(folder)]) == 0
    capsys.readouterr()


def test_new_refuses_to_overwrite_and_bad_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    existing = tmp_path / "mine"
    existing.mkdir()
    (existing / "migration.yaml").write_text("id: mine\n")
    assert main(["new", "mine", "--dir", str(tmp_path)]) == 2
    assert "already exists; refusing to overwrite it" in capsys.readouterr().err
    assert (existing / "migration.yaml").read_text() == "id: mine\n"
    assert main(["new", "Bad-Name", "--dir", str(tmp_path)]) == 2
    assert "is not a migration id" in capsys.readouterr().err
    assert not (tmp_path / "Bad-Name").exists()


def test_new_defaults_to_dags_migrations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "dags" / "migrations").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert main(["new", "x1"]) == 0
    assert (tmp_path / "dags" / "migrations" / "x1" / "migration.yaml").is_file()


def _record_a_run(dsn: str, schema: str = "airflow_expand") -> None:
    ledger = Ledger(schema)
    with psycopg.connect(dsn, autocommit=True) as conn:
        ledger.ensure(conn)
        Lifecycle(ledger).move(conn, "products_title_to_name", Event.EXPAND_STARTED)
        Lifecycle(ledger).move(
            conn,
            "products_title_to_name",
            Event.EXPANDED,
            dag_id="products_title_to_name",
            run_id="manual__1",
        )
        ledger.start_step(conn, "products_title_to_name", "expand")
        ledger.finish_step(conn, "products_title_to_name", "expand")
        ledger.start_step(
            conn, "products_title_to_name", "backfill:products", rows_total=200_000, batch_size=5000
        )
        with conn.transaction(), conn.cursor() as cur:
            ledger.checkpoint(
                cur, "products_title_to_name", "backfill:products", 0, last_key="45000", rows_added=45_000
            )
        ledger.start_step(conn, "products_title_to_name", "index:idx_products_name")
        ledger.finish_step(
            conn, "products_title_to_name", "index:idx_products_name", status="failed", error="lock timeout"
        )


def test_status_reads_the_ledger_through_a_dsn(pg_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "products_title_to_name", "--conn", pg_dsn]) == 1
    assert "no ledger in schema airflow_expand" in capsys.readouterr().err
    _record_a_run(pg_dsn)
    assert main(["status", "products_title_to_name", "--conn", pg_dsn]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "products_title_to_name: expanded (dag products_title_to_name, run manual__1)"
    assert lines[1].split()[0] == "expanded_at" and lines[1].split()[1].startswith("20")
    assert "deployed_at     -" in out
    backfill = next(line for line in lines if line.startswith("backfill:products"))
    assert backfill.split()[1:3] == ["0", "running"] and "45,000 / 200,000 rows (22%)" in backfill
    assert "backfill:products[0]: last key 45000; batch size 5000" in out
    assert "index:idx_products_name[0]: error: lock timeout" in out
    assert main(["status", "other_migration", "--conn", pg_dsn]) == 1
    assert "other_migration has no entry in the ledger" in capsys.readouterr().err


def test_status_json_and_another_schema(pg_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    _record_a_run(pg_dsn, schema="ops_ledger")
    assert (
        main(["status", "products_title_to_name", "--conn", pg_dsn, "--schema", "ops_ledger", "--json"]) == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["migration"]["phase"] == "expanded" and data["migration"]["deployed_at"] is None
    assert {(s["step"], s["status"]) for s in data["steps"]} == {
        ("expand", "success"),
        ("backfill:products", "running"),
        ("index:idx_products_name", "failed"),
    }


def test_status_through_an_airflow_connection_id(
    pg_dsn: str, airflow_conn: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _record_a_run(pg_dsn)
    assert main(["status", "products_title_to_name", "--conn", airflow_conn["postgres"]]) == 0
    assert capsys.readouterr().out.startswith("products_title_to_name: expanded")
    assert main(["status", "products_title_to_name", "--conn", "no_such_conn"]) == 2
    assert "Airflow connection 'no_such_conn'" in capsys.readouterr().err


def test_status_connection_failure_hides_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    dsn = "postgresql://postgres:s3cret@127.0.0.1:1/postgres"
    assert main(["status", "x", "--conn", dsn]) == 2
    err = capsys.readouterr().err
    assert "cannot connect to" in err and "s3cret" not in err


def test_plan_lists_the_steps_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    example = Path(__file__).resolve().parent.parent / "dags" / "migrations" / "products_title_to_name"
    assert main(["plan", str(example)]) == 0
    out = capsys.readouterr().out
    steps, sql_text = out.split("\n\n", 1)
    lines = [line.split()[1] for line in steps.splitlines()[1:]]
    assert lines[:3] == ["lint", "begin", "preflight"]
    assert "-- expand (expand.sql)" in sql_text and "-- contract (contract.sql)" in sql_text
    assert (
        lines.index("expand")
        < lines.index("backfill.products")
        < lines.index("soak")
        < lines.index("contract")
    )
    assert "runs on one_failed of:" in out and "teardown: always runs" in out
    assert main(["plan", str(example.parent)]) == 2
