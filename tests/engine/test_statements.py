"""Splitting and classifying SQL with the real PostgreSQL parser."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_provider_expand.engine.statements import (
    FragmentError,
    SQLFileError,
    load_statements,
    parse_assignments,
    parse_predicate,
    parse_statements,
    relations,
)

SQL = """-- expand: add the new column
ALTER TABLE products ADD COLUMN name text;

/* the sync trigger; its body holds semicolons */
CREATE FUNCTION sync_name() RETURNS trigger AS $$
BEGIN NEW.name := NEW.title; RETURN NEW; END;
$$ LANGUAGE plpgsql;
CREATE INDEX CONCURRENTLY idx_products_name ON products (name);
DROP INDEX CONCURRENTLY IF EXISTS idx_old;
REINDEX (CONCURRENTLY) INDEX idx_products_name;
CREATE INDEX idx_plain ON products (title)
"""


def test_split_lines_and_concurrency() -> None:
    stmts = parse_statements(SQL, source="expand.sql")
    assert [s.line for s in stmts] == [2, 5, 8, 9, 10, 11]
    assert [s.concurrently for s in stmts] == [False, False, True, True, True, False]
    assert stmts[1].sql.startswith("CREATE FUNCTION sync_name()") and stmts[1].sql.endswith("plpgsql")
    assert stmts[0].kind == "AlterTableStmt" and stmts[0].where == "expand.sql:2"
    assert stmts[-1].sql == "CREATE INDEX idx_plain ON products (title)"


def test_syntax_error_names_file_and_line() -> None:
    with pytest.raises(
        SQLFileError, match=r"^contract\.sql:3: does not parse: syntax error at or near \"TABL\""
    ):
        parse_statements("SELECT 1;\n\nALTER TABL products DROP COLUMN title;\n", source="contract.sql")


def test_syntax_error_line_counts_characters_not_bytes() -> None:
    # pglast reports the error's position in characters: counted as UTF-8 bytes, the two-byte letters
    # (and the emoji, four bytes) above the error would push it several lines too far.
    text = (
        "-- redenumire: produsele își păstrează numele vechi până la contract 🚀\n"
        "COMMENT ON TABLE products IS 'Produse în stoc, cu preț și denumire în română: ăîșțâ ăîșțâ ăîșțâ';\n"
        "SELECT 'ăîșțâ ăîșțâ ăîșțâ ăîșțâ ăîșțâ ăîșțâ ăîșțâ ăîșțâ ăîșțâ ăîșțâ ăîșțâ ăîșțâ ăîșțâ';\n"
        "ALTER TABL products DROP COLUMN title;\n"
        "SELECT 1;\nSELECT 2;\nSELECT 3;\nSELECT 4;\nSELECT 5;\n"
    )
    with pytest.raises(SQLFileError, match=r'^expand\.sql:4: does not parse: syntax error at or near "TABL"'):
        parse_statements(text, source="expand.sql")


def test_unreadable_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "rollback.sql"
    with pytest.raises(SQLFileError, match=r"rollback\.sql:0: cannot be read"):
        load_statements(missing)
    bad = tmp_path / "expand.sql"
    bad.write_bytes(b"SELECT '\xff';")
    with pytest.raises(SQLFileError, match=r"expand\.sql:0: is not UTF-8"):
        load_statements(bad)


def test_relations_in_order_of_mention() -> None:
    stmts = parse_statements(
        "ALTER TABLE public.products ADD COLUMN name text;"
        "CREATE TRIGGER t BEFORE INSERT ON products FOR EACH ROW EXECUTE FUNCTION f();"
        "CREATE INDEX CONCURRENTLY i ON shops (x); ALTER TABLE public.products DROP COLUMN y;"
    )
    assert relations(stmts) == ["public.products", "products", "shops"]


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("name IS", "syntax"),
        ("true; DROP TABLE t", "several"),
        ("true UNION SELECT 2", "shape"),
        ("name IS NULL ORDER BY 1", "clauses"),
        ("name IS NULL OFFSET 1", "clauses"),
        ("id IN (SELECT 1)", "subquery"),
    ],
)
def test_one_fragment_validator_names_the_rule_a_predicate_breaks(text: str, rule: str) -> None:
    with pytest.raises(FragmentError) as caught:
        parse_predicate(text, subqueries=False)
    assert caught.value.rule == rule


def test_a_predicate_may_hold_a_subquery_where_its_caller_allows_it() -> None:
    assert parse_predicate("id IN (SELECT 1)") is not None
    assert parse_assignments("name = title, n = n + 1").targetList is not None
    with pytest.raises(FragmentError, match="assignments only") as caught:
        parse_assignments("name = title WHERE true")
    assert caught.value.rule == "clauses"
    with pytest.raises(FragmentError, match="assigns name more than once") as caught:
        parse_assignments("name = title, (name, n) = (1, 2)")
    assert caught.value.rule == "duplicate"
