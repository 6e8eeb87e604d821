"""`-- expand: allow CODE because <reason>`: it silences one rule for one statement, and only with a reason."""

from __future__ import annotations

from airflow_provider_expand.engine.lint import lint_sql


def found(sql: str, phase: str = "expand") -> list[tuple[str, int]]:
    return [(f.code, f.line) for f in lint_sql(sql, "expand.sql", phase)]  # type: ignore[arg-type]


def test_suppression_on_the_line_before_silences_that_statement_only() -> None:
    sql = (
        "-- expand: allow EX201 because the table holds 40 rows\n"
        "CREATE INDEX i1 ON shops (domain);\n"
        "CREATE INDEX i2 ON shops (created_at);\n"
    )
    assert found(sql) == [("EX201", 3)]


def test_suppression_on_the_statements_own_line() -> None:
    sql = "CREATE INDEX i1 ON shops (domain); -- expand: allow EX201 because 40 rows\nCREATE INDEX i2 ON shops (x);\n"
    assert found(sql) == [("EX201", 2)]


def test_suppression_inside_a_multi_line_statement_and_several_codes() -> None:
    sql = (
        "ALTER TABLE shops\n"
        "  ADD COLUMN plan text NOT NULL,  /* expand: allow EX301, EX402 because shops is empty until launch */\n"
        "  ADD CONSTRAINT plan_known CHECK (plan IN ('free', 'pro'));\n"
    )
    assert found(sql) == []


def test_suppression_only_silences_the_codes_it_names() -> None:
    sql = "-- expand: allow EX303 because small table\nALTER TABLE shops ADD COLUMN plan text NOT NULL;\n"
    assert found(sql) == [("EX005", 1), ("EX301", 2)]  # and the EX303 it names silences nothing


def test_suppression_without_a_reason_is_a_finding_and_does_not_count() -> None:
    sql = "-- expand: allow EX201\nCREATE INDEX i1 ON shops (domain);\n"
    assert found(sql) == [("EX002", 1), ("EX201", 2)]
    sql = "-- expand: allow EX201 because   \nCREATE INDEX i1 ON shops (domain);\n"
    assert found(sql) == [("EX002", 1), ("EX201", 2)]


def test_malformed_or_unknown_suppressions_are_findings() -> None:
    assert found("-- expand: allow everything because yolo\nSELECT 1;\n") == [("EX003", 1)]
    assert found("-- expand: allow EX999 because typo\nSELECT 1;\n") == [("EX003", 1)]
    assert found("SELECT 1;\n-- expand: allow EX201 because nothing follows\n") == [("EX003", 2)]


def test_ordinary_comments_and_strings_are_not_suppressions() -> None:
    sql = (
        "-- expand: add the column the new code writes\n"
        "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $$ SELECT '-- expand: allow EX201 because no' $$;\n"
        "CREATE INDEX i1 ON shops (domain);\n"
    )
    assert found(sql) == [("EX201", 3)]


def test_a_suppression_cannot_silence_a_syntax_error() -> None:
    assert found("-- expand: allow EX001 because trust me\nCREATE INDX i ON shops (x);\n") == [("EX001", 2)]


def test_a_suppression_that_silences_nothing_is_a_warning() -> None:
    sql = "-- expand: allow EX201 because shops holds 40 rows\nCREATE INDEX CONCURRENTLY IF NOT EXISTS i ON shops (x);\n"
    (finding,) = lint_sql(sql, "expand.sql", "expand")
    assert (finding.code, finding.line, finding.severity) == ("EX005", 1, "warning")
    assert finding.message.startswith("suppression of EX201 silences nothing")
    used = "-- expand: allow EX201 because shops holds 40 rows\nCREATE INDEX i ON shops (x);\n"
    assert found(used) == []
    # a rule that compares files (EX903, at the expand statement) is not judged by one file alone
    assert found("-- expand: allow EX903 because kept on purpose\nCREATE TABLE audit (id bigint);\n") == []
