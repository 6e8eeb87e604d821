"""squawk's rule book against ours: every squawk rule is covered by a rule that names it in its metadata
(``Rule.squawk``), or is listed here as not adopted with the reason; one unsafe statement per squawk rule,
written for this test from the rule's description, trips the rule we map it to, in the phase given."""

from __future__ import annotations

import pytest

from airflow_provider_expand.engine.lint import RULES, Phase, lint_sql

# squawk's rules (crates/squawk_linter/src/lib.rs, enum Rule, 2026-12), mapped to ours
SQUAWK: dict[str, set[str]] = {
    "adding-field-with-default": {"EX302"},
    "adding-foreign-key-constraint": {"EX401"},
    "adding-not-nullable-field": {"EX304"},
    "adding-required-field": {"EX301"},
    "adding-serial-primary-key-field": {"EX403"},
    "ban-alter-domain-with-add-constraint": {"EX321"},
    "ban-char-field": {"EX314"},
    "ban-concurrent-index-creation-in-transaction": {"EX701"},
    "ban-create-domain-with-constraint": {"EX320"},
    "ban-drop-column": {"EX101"},
    "ban-drop-database": {"EX105"},
    "ban-drop-not-null": {"EX305"},
    "ban-drop-table": {"EX101"},
    "ban-duplicate-column-assignments": {"EX306"},
    "ban-truncate-cascade": {"EX106"},
    "ban-uncommitted-transaction": {"EX702"},
    "changing-column-type": {"EX303"},
    "constraint-missing-not-valid": {"EX401", "EX402", "EX404"},
    "disallowed-unique-constraint": {"EX403"},
    "identifier-too-long": {"EX004"},
    "prefer-bigint-over-int": {"EX310"},
    "prefer-bigint-over-smallint": {"EX310"},
    "prefer-identity": {"EX311"},
    "prefer-repack": {"EX501", "EX502"},
    "prefer-robust-stmts": {"EX204", "EX905"},
    "prefer-text-field": {"EX312"},
    "prefer-timestamptz": {"EX313"},
    "renaming-column": {"EX102"},
    "renaming-table": {"EX102"},
    "require-concurrent-index-creation": {"EX201"},
    "require-concurrent-index-deletion": {"EX202"},
    "require-concurrent-partition-detach": {"EX505"},
    "require-concurrent-reindex": {"EX203"},
    "require-enum-value-ordering": {"EX322"},
    "require-lock-timeout": {"EX801"},
    "require-statement-timeout": {"EX801"},
    "require-timeout-settings": {"EX801"},
    "transaction-nesting": {"EX702"},
    "syntax-error": {"EX001"},
    "unused-ignore": {"EX005"},
}
NOT_ADOPTED = {
    # opt-in in squawk; unqualified names resolve through the connection's search_path, as the app's own do
    "require-table-schema",
}

# (squawk rule, phase, a statement squawk's rule is about)
UNSAFE: list[tuple[str, Phase, str]] = [
    (
        "adding-field-with-default",
        "expand",
        "ALTER TABLE recipe ADD COLUMN token uuid DEFAULT gen_random_uuid()",
    ),
    (
        "adding-foreign-key-constraint",
        "expand",
        "ALTER TABLE email ADD CONSTRAINT fk FOREIGN KEY (uid) REFERENCES u (id)",
    ),
    ("adding-not-nullable-field", "contract", "ALTER TABLE recipe ALTER COLUMN view_count SET NOT NULL"),
    ("adding-required-field", "expand", "ALTER TABLE recipe ADD COLUMN public boolean NOT NULL"),
    ("adding-serial-primary-key-field", "expand", "ALTER TABLE account ADD PRIMARY KEY (id)"),
    ("ban-alter-domain-with-add-constraint", "expand", "ALTER DOMAIN d ADD CONSTRAINT c CHECK (VALUE > 0)"),
    ("ban-char-field", "expand", "CREATE TABLE app_user (name char(100))"),
    (
        "ban-concurrent-index-creation-in-transaction",
        "expand",
        "BEGIN;\nCREATE INDEX CONCURRENTLY i ON u (e);\nCOMMIT",
    ),
    ("ban-create-domain-with-constraint", "expand", "CREATE DOMAIN email AS text CHECK (VALUE LIKE '%@%')"),
    ("ban-drop-column", "expand", "ALTER TABLE recipe DROP COLUMN title"),
    ("ban-drop-database", "contract", "DROP DATABASE shop"),
    ("ban-drop-not-null", "expand", "ALTER TABLE recipe ALTER COLUMN title DROP NOT NULL"),
    ("ban-drop-table", "expand", "DROP TABLE recipe"),
    ("ban-duplicate-column-assignments", "expand", "UPDATE t SET a = 1, a = 2 WHERE id = 1"),
    ("ban-truncate-cascade", "contract", "TRUNCATE a CASCADE"),
    ("ban-uncommitted-transaction", "expand", "BEGIN;\nCREATE TABLE users (id bigint)"),
    ("changing-column-type", "expand", "ALTER TABLE user_email ALTER COLUMN user_id TYPE bigint"),
    (
        "constraint-missing-not-valid",
        "expand",
        "ALTER TABLE accounts ADD CONSTRAINT pos CHECK (balance >= 0)",
    ),
    (
        "constraint-missing-not-valid",
        "expand",
        "ALTER TABLE accounts ADD CONSTRAINT pos CHECK (balance >= 0) NOT VALID;\n"
        "ALTER TABLE accounts VALIDATE CONSTRAINT pos",
    ),
    ("disallowed-unique-constraint", "expand", "ALTER TABLE distributors ADD CONSTRAINT u UNIQUE (dist_id)"),
    ("identifier-too-long", "expand", f"CREATE TABLE {'table_very_long_' * 5} (id bigint)"),
    ("prefer-bigint-over-int", "expand", "CREATE TABLE posts (id int PRIMARY KEY)"),
    ("prefer-bigint-over-smallint", "expand", "CREATE TABLE posts (id smallint PRIMARY KEY)"),
    ("prefer-identity", "expand", "CREATE TABLE users (id bigserial)"),
    ("prefer-repack", "contract", "VACUUM FULL t"),
    ("prefer-repack", "contract", "CLUSTER t USING t_pkey"),
    ("prefer-robust-stmts", "rollback", "DROP INDEX CONCURRENTLY email_idx"),
    ("prefer-robust-stmts", "expand", "CREATE INDEX CONCURRENTLY ON app_user (billing_email)"),
    ("prefer-text-field", "expand", "CREATE TABLE app_user (email varchar(100) NOT NULL)"),
    ("prefer-timestamptz", "expand", "CREATE TABLE users (created_ts timestamp)"),
    ("renaming-column", "expand", "ALTER TABLE t RENAME COLUMN a TO b"),
    ("renaming-table", "contract", "ALTER TABLE user_stars RENAME TO user_favorites"),
    ("require-concurrent-index-creation", "expand", "CREATE INDEX email_idx ON app_user (email)"),
    ("require-concurrent-index-deletion", "contract", "DROP INDEX app.email_idx"),
    ("require-concurrent-partition-detach", "contract", "ALTER TABLE t DETACH PARTITION p"),
    ("require-concurrent-reindex", "contract", "REINDEX TABLE foo"),
    ("require-enum-value-ordering", "expand", "ALTER TYPE status ADD VALUE 'pending_review'"),
    ("require-lock-timeout", "expand", "SET lock_timeout = '1s'"),
    ("require-statement-timeout", "expand", "SET statement_timeout = '5s'"),
    ("require-timeout-settings", "expand", "RESET lock_timeout"),
    ("transaction-nesting", "expand", "BEGIN;\nBEGIN;\nCOMMIT"),
    ("syntax-error", "expand", "ALTER TABLE t ADD COLUM c int"),
    (
        "unused-ignore",
        "expand",
        "-- expand: allow EX201 because small\nCREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (x)",
    ),
]


def test_every_squawk_rule_is_mapped_in_the_rules_metadata() -> None:
    named = {name: {r.code for r in RULES if name in r.squawk} for name in SQUAWK}
    assert named == SQUAWK
    assert {n for r in RULES for n in r.squawk} == set(SQUAWK)  # no rule names a squawk rule not listed
    assert not NOT_ADOPTED & set(SQUAWK)


@pytest.mark.parametrize(
    ("squawk", "phase", "sql"), UNSAFE, ids=[f"{c[0]}-{i}" for i, c in enumerate(UNSAFE)]
)
def test_each_squawk_rule_s_unsafe_case_trips_the_rule_mapped_to_it(
    squawk: str, phase: Phase, sql: str
) -> None:
    codes = {f.code for f in lint_sql(sql, f"{phase}.sql", phase)}
    assert codes & SQUAWK[squawk], (squawk, codes)


def test_every_squawk_rule_has_an_unsafe_case() -> None:
    assert {c[0] for c in UNSAFE} == set(SQUAWK)


def test_every_rule_explains_itself_and_offers_an_alternative() -> None:
    for rule in RULES:
        assert rule.explanation and rule.alternative, rule.code
        assert rule.severity in ("error", "warning")
