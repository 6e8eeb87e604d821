"""The DAG's lint task reads the same ``lint.toml`` as the CLI: errors fail it, warnings are logged,
disabled rules are silent, and a bad ``lint.toml`` fails it naming the file and key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from airflow.sdk import Context

from airflow_provider_expand.engine.lint.config import LintConfigError
from airflow_provider_expand.operators.lint import LintFindingsError, LintOperator

EXAMPLE = Path(__file__).resolve().parents[2] / "dags" / "migrations" / "products_title_to_name"
NO_CONTEXT: Context = {}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / ".git").mkdir()
    migration = Path(shutil.copytree(EXAMPLE, tmp_path / "migrations" / EXAMPLE.name))
    expand = migration / "expand.sql"
    expand.write_text(expand.read_text() + "\nCREATE INDEX idx_products_title ON products (title);\n")
    rollback = migration / "rollback.sql"  # which undoes it (EX903 otherwise)
    rollback.write_text(rollback.read_text() + "DROP INDEX CONCURRENTLY IF EXISTS idx_products_title;\n")
    return migration


def lint(folder: Path) -> int:
    return LintOperator(task_id="lint", folder=str(folder)).execute(NO_CONTEXT)


def test_the_lint_task_follows_lint_toml(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(LintFindingsError, match="1 lint finding"):
        lint(folder)
    toml = folder.parent / "lint.toml"
    toml.write_text('[severity]\nEX201 = "warning"\n')
    capsys.readouterr()
    assert lint(folder) == 0
    logged = [line for line in capsys.readouterr().out.splitlines() if "EX201" in line]
    assert (
        len(logged) == 1
        and "[warning" in logged[0]
        and "EX201 (warning) builds idx_products_title" in logged[0]
    )
    toml.write_text('disable = ["EX201"]\n')
    assert lint(folder) == 0
    toml.write_text('[severity]\nEX201 = "fatal"\n')
    with pytest.raises(LintConfigError, match=r"lint\.toml: severity\.EX201: must be one of"):
        lint(folder)
