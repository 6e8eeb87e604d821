"""Every lint rule: a statement that trips it and a near miss that does not (the safe alternative)."""

from __future__ import annotations

import pytest

from airflow_provider_expand.engine.lint import RULES, Finding, Phase, lint_sql

# (code, phase, SQL that trips the rule, SQL that does the same job safely)
CASES: list[tuple[str, Phase, str, str]] = [
    # destructive
    (
        "EX101",
        "expand",
        "ALTER TABLE products DROP COLUMN title",
        "ALTER TABLE products ADD COLUMN name text",
    ),
    ("EX101", "expand", "DROP TABLE legacy_orders", "CREATE TABLE tmp_x (id int); DROP TABLE tmp_x"),
    ("EX101", "expand", "ALTER TABLE products DROP CONSTRAINT products_price_check", "SELECT 1"),
    (
        "EX101",
        "expand",
        "DROP TRIGGER IF EXISTS trg ON products",
        "CREATE OR REPLACE TRIGGER trg BEFORE INSERT ON products FOR EACH ROW EXECUTE FUNCTION f()",
    ),
    (
        "EX101",
        "expand",
        "ALTER TABLE products ALTER COLUMN price DROP DEFAULT",
        "ALTER TABLE products ALTER COLUMN price SET DEFAULT 0",
    ),
    (
        "EX102",
        "expand",
        "ALTER TABLE products RENAME COLUMN title TO name",
        "ALTER TABLE products ADD COLUMN name text",
    ),
    (
        "EX102",
        "contract",
        "ALTER TABLE products RENAME TO items",
        "CREATE VIEW items AS SELECT * FROM products",
    ),
    (
        "EX102",
        "expand",
        "ALTER TABLE products SET SCHEMA archive",
        "CREATE TABLE t (id int); ALTER TABLE t SET SCHEMA archive",
    ),
    ("EX103", "contract", "TRUNCATE products", "CREATE TABLE t (id int); TRUNCATE t"),
    # indexes
    (
        "EX201",
        "expand",
        "CREATE INDEX idx_products_name ON products (name)",
        "CREATE INDEX CONCURRENTLY idx_products_name ON products (name)",
    ),
    (
        "EX201",
        "contract",
        "CREATE UNIQUE INDEX u ON products (sku)",
        "CREATE TABLE sku_map (sku text); CREATE UNIQUE INDEX u ON sku_map (sku)",
    ),
    ("EX202", "contract", "DROP INDEX idx_products_title", "DROP INDEX CONCURRENTLY idx_products_title"),
    (
        "EX202",
        "rollback",
        "DROP INDEX IF EXISTS idx_products_name",
        "DROP INDEX CONCURRENTLY IF EXISTS idx_products_name",
    ),
    (
        "EX203",
        "contract",
        "REINDEX INDEX idx_products_name",
        "REINDEX (CONCURRENTLY) INDEX idx_products_name",
    ),
    # columns
    (
        "EX301",
        "expand",
        "ALTER TABLE products ADD COLUMN sku text NOT NULL",
        "ALTER TABLE products ADD COLUMN sku text NOT NULL DEFAULT ''",
    ),
    (
        "EX302",
        "expand",
        "ALTER TABLE products ADD COLUMN uid uuid DEFAULT gen_random_uuid()",
        "ALTER TABLE products ADD COLUMN added_at timestamptz DEFAULT now()",
    ),
    (
        "EX302",
        "expand",
        "ALTER TABLE products ADD COLUMN seq bigserial",
        "ALTER TABLE products ADD COLUMN seq bigint",
    ),
    (
        "EX302",
        "expand",
        "ALTER TABLE products ADD COLUMN n int GENERATED ALWAYS AS IDENTITY",
        "CREATE TABLE t (x int); ALTER TABLE t ADD COLUMN n int GENERATED ALWAYS AS IDENTITY",
    ),
    (
        "EX302",
        "expand",
        "ALTER TABLE products ADD COLUMN cents bigint GENERATED ALWAYS AS (price * 100) STORED",
        "ALTER TABLE products ADD COLUMN cents bigint",
    ),
    (
        "EX303",
        "expand",
        "ALTER TABLE products ALTER COLUMN price TYPE numeric(14, 2)",
        "ALTER TABLE products ADD COLUMN price_v2 numeric(14, 2)",
    ),
    (
        "EX304",
        "contract",
        "ALTER TABLE products ALTER COLUMN name SET NOT NULL",
        "ALTER TABLE products ADD CONSTRAINT n CHECK (name IS NOT NULL) NOT VALID;\n"
        "ALTER TABLE products VALIDATE CONSTRAINT n;\nALTER TABLE products ALTER COLUMN name SET NOT NULL",
    ),
    # constraints
    (
        "EX401",
        "expand",
        "ALTER TABLE products ADD CONSTRAINT fk_shop FOREIGN KEY (shop_id) REFERENCES shops (id)",
        "ALTER TABLE products ADD CONSTRAINT fk_shop FOREIGN KEY (shop_id) REFERENCES shops (id) NOT VALID",
    ),
    (
        "EX401",
        "expand",
        "ALTER TABLE products ADD COLUMN brand_id bigint REFERENCES brands (id)",
        "ALTER TABLE products ADD COLUMN brand_id bigint",
    ),
    (
        "EX402",
        "expand",
        "ALTER TABLE products ADD CONSTRAINT price_positive CHECK (price > 0)",
        "ALTER TABLE products ADD CONSTRAINT price_positive CHECK (price > 0) NOT VALID",
    ),
    (
        "EX403",
        "expand",
        "ALTER TABLE products ADD CONSTRAINT sku_unique UNIQUE (sku)",
        "ALTER TABLE products ADD CONSTRAINT sku_unique UNIQUE USING INDEX idx_sku",
    ),
    (
        "EX403",
        "expand",
        "ALTER TABLE products ADD PRIMARY KEY (id)",
        "ALTER TABLE products ADD PRIMARY KEY USING INDEX products_id_idx",
    ),
    (
        "EX403",
        "expand",
        "ALTER TABLE bookings ADD CONSTRAINT no_overlap EXCLUDE USING gist (room WITH =, during WITH &&)",
        "CREATE TABLE bookings2 (room int, during tstzrange, EXCLUDE USING gist (room WITH =, during WITH &&))",
    ),
    # locking
    ("EX501", "contract", "VACUUM FULL products", "VACUUM products"),
    ("EX502", "contract", "CLUSTER products USING idx_products_name", "ANALYZE products"),
    ("EX503", "expand", "LOCK TABLE products IN ACCESS EXCLUSIVE MODE", "SELECT 1"),
    (
        "EX504",
        "contract",
        "ALTER TABLE products SET TABLESPACE fast_ssd",
        "ALTER TABLE products SET (fillfactor = 90)",
    ),
    # data
    ("EX601", "expand", "UPDATE products SET name = title", "UPDATE products SET name = title WHERE id = 1"),
    ("EX601", "rollback", "DELETE FROM products", "DELETE FROM products WHERE id = 1"),
    # transactions
    (
        "EX701",
        "expand",
        "BEGIN;\nCREATE INDEX CONCURRENTLY i ON products (name);\nCOMMIT",
        "CREATE INDEX CONCURRENTLY i ON products (name)",
    ),
    (
        "EX702",
        "contract",
        "BEGIN;\nALTER TABLE products DROP COLUMN title;\nCOMMIT",
        "ALTER TABLE products DROP COLUMN title",
    ),
    # session settings the runner owns
    ("EX801", "expand", "SET lock_timeout = 0", "SET search_path = app, public"),
    ("EX801", "contract", "SET LOCAL statement_timeout TO DEFAULT", "SET LOCAL work_mem = '64MB'"),
    ("EX801", "rollback", "SET idle_in_transaction_session_timeout = 0", "SET application_name = 'x'"),
    ("EX801", "expand", "RESET lock_timeout", "RESET work_mem"),
    ("EX801", "contract", "RESET ALL", "RESET search_path"),
    ("EX801", "expand", "SET statement_timeout FROM CURRENT", "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
    ("EX801", "expand", "DISCARD ALL", "DISCARD PLANS"),
    (
        "EX801",
        "expand",
        "SELECT set_config('lock_timeout', '0', false)",
        "SELECT set_config('search_path', 'app', false)",
    ),
    (
        "EX801",
        "contract",
        "SELECT pg_catalog.set_config('Statement_Timeout'::text, '0', true)",
        "SELECT current_setting('statement_timeout')",
    ),
    (
        "EX801",
        "expand",
        "UPDATE products SET n = 1 WHERE id = (SELECT 1 FROM (SELECT set_config('lock_timeout', '0', true)) s)",
        "UPDATE products SET n = 1 WHERE id = 1",
    ),
    (
        "EX801",
        "expand",
        "DO $$ BEGIN PERFORM 1; END $$; SELECT set_config(current_setting('x.name'), '0', false)",
        "SELECT set_config('application_name', 'migration', false)",
    ),
    (
        "EX801",
        "expand",
        "DO $$ BEGIN SET LOCAL lock_timeout = 0; UPDATE products SET n = 1 WHERE id = 1; END $$",
        "DO $$ BEGIN SET LOCAL work_mem = '64MB'; UPDATE products SET n = 1 WHERE id = 1; END $$",
    ),
    (
        "EX801",
        "contract",
        "DO $$ BEGIN PERFORM set_config('statement_timeout', '0', true); END $$",
        "DO $$ BEGIN PERFORM set_config('application_name', 'm', true); END $$",
    ),
    (
        "EX801",
        "rollback",
        "DO $$ BEGIN IF true THEN EXECUTE 'RESET ALL'; END IF; END $$",
        "DO $$ BEGIN IF true THEN EXECUTE 'RESET work_mem'; END IF; END $$",
    ),
    ("EX802", "expand", "DO $$ BEGIN SET ROLE app_owner; END $$", "DO $$ BEGIN RAISE NOTICE 'x'; END $$"),
    ("EX802", "expand", "SET ROLE app_owner", "SET search_path = app"),
    ("EX802", "contract", "SET LOCAL ROLE app_owner", "SELECT 1"),
    ("EX802", "rollback", "RESET ROLE", "RESET work_mem"),
    ("EX802", "expand", "SET SESSION AUTHORIZATION app_owner", "SELECT 1"),
    ("EX802", "expand", "RESET SESSION AUTHORIZATION", "SELECT 1"),
    ("EX802", "expand", "SELECT set_config('role', 'app_owner', false)", "SELECT 1"),
    # names as PostgreSQL stores them (63 bytes, not characters)
    (
        "EX004",
        "expand",
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {'products_by_name_' * 4} ON products (name)",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS products_name_idx ON products (name)",
    ),
    (
        "EX004",
        "expand",
        f'ALTER TABLE products ADD COLUMN "{"ă" * 32}" text',
        "ALTER TABLE products ADD COLUMN ă text",
    ),
    # destructive, continued
    (
        "EX102",
        "expand",
        "ALTER TYPE order_status RENAME VALUE 'paid' TO 'settled'",
        "ALTER TYPE order_status ADD VALUE 'settled' AFTER 'paid'",
    ),
    ("EX105", "contract", "DROP DATABASE shop_staging", "DROP TABLE IF EXISTS shop_staging"),
    ("EX106", "rollback", "TRUNCATE products CASCADE", "TRUNCATE products, product_tags"),
    (
        "EX106",
        "expand",
        "CREATE TABLE t (id bigint);\nTRUNCATE t CASCADE",
        "CREATE TABLE t (id bigint);\nTRUNCATE t",
    ),
    # indexes, continued
    (
        "EX204",
        "expand",
        "CREATE INDEX CONCURRENTLY ON products (name)",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS products_name_idx ON products (name)",
    ),
    (
        "EX204",
        "contract",
        "CREATE UNIQUE INDEX CONCURRENTLY ON products (sku)",
        "CREATE TABLE t (x text);\nCREATE INDEX ON t (x)",
    ),
    # columns, continued
    (
        "EX305",
        "expand",
        "ALTER TABLE products ALTER COLUMN title DROP NOT NULL",
        "ALTER TABLE products ALTER COLUMN title SET DEFAULT ''",
    ),
    (
        "EX306",
        "expand",
        "UPDATE products SET name = title, name = 'x' WHERE id = 1",
        "UPDATE products SET name = title WHERE id = 1",
    ),
    ("EX306", "expand", "CREATE TABLE tags (a bigint, a text)", "CREATE TABLE tags (a bigint, b text)"),
    (
        "EX306",
        "contract",
        "INSERT INTO products (id, id) VALUES (1, 2)",
        "INSERT INTO products (id, name) VALUES (1, 'x')",
    ),
    ("EX306", "expand", "CREATE VIEW v (a, a) AS SELECT 1, 2", "CREATE VIEW v (a, b) AS SELECT 1, 2"),
    (
        "EX306",
        "expand",
        "ALTER TABLE products ADD COLUMN a text, ADD COLUMN a text",
        "ALTER TABLE products ADD COLUMN a text, ADD COLUMN b text",
    ),
    (
        "EX306",
        "rollback",
        "INSERT INTO products (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET name = 'a', name = 'b'",
        "INSERT INTO products (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET name = 'a'",
    ),
    # column types (warnings)
    (
        "EX310",
        "expand",
        "CREATE TABLE orders (id int PRIMARY KEY)",
        "CREATE TABLE orders (id bigint PRIMARY KEY)",
    ),
    (
        "EX310",
        "expand",
        "ALTER TABLE products ADD COLUMN rank smallint",
        "ALTER TABLE products ADD COLUMN rank bigint",
    ),
    ("EX310", "expand", "CREATE TABLE orders (id serial)", "CREATE TABLE orders (id bigserial)"),
    (
        "EX311",
        "expand",
        "CREATE TABLE orders (id bigserial PRIMARY KEY)",
        "CREATE TABLE orders (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY)",
    ),
    (
        "EX312",
        "expand",
        "CREATE TABLE users (email varchar(100))",
        "CREATE TABLE users (email text CHECK (length(email) <= 100), nick varchar)",
    ),
    ("EX313", "expand", "CREATE TABLE events (at timestamp)", "CREATE TABLE events (at timestamptz)"),
    (
        "EX313",
        "contract",
        "ALTER TABLE events ALTER COLUMN at TYPE timestamp without time zone",
        "ALTER TABLE events ALTER COLUMN at TYPE timestamp with time zone",
    ),
    (
        "EX314",
        "expand",
        "CREATE TABLE users (code char(3), flag character)",
        'CREATE TABLE users (code text, k "char")',
    ),
    # domains and enums
    (
        "EX320",
        "expand",
        "CREATE DOMAIN positive AS bigint CHECK (VALUE > 0)",
        "CREATE DOMAIN label AS text NOT NULL",
    ),
    (
        "EX321",
        "expand",
        "ALTER DOMAIN positive ADD CONSTRAINT p CHECK (VALUE > 0)",
        "ALTER TABLE products ADD CONSTRAINT p CHECK (price > 0) NOT VALID",
    ),
    (
        "EX321",
        "contract",
        "ALTER DOMAIN label ADD CONSTRAINT l CHECK (VALUE <> '') NOT VALID",
        "ALTER DOMAIN label DROP NOT NULL",
    ),
    ("EX321", "expand", "ALTER DOMAIN label SET NOT NULL", "ALTER DOMAIN label SET DEFAULT ''"),
    (
        "EX322",
        "expand",
        "ALTER TYPE order_status ADD VALUE 'pending_review'",
        "ALTER TYPE order_status ADD VALUE IF NOT EXISTS 'pending_review' BEFORE 'approved'",
    ),
    (
        "EX323",
        "expand",
        "ALTER TYPE order_status ADD VALUE 'held' AFTER 'paid';\nUPDATE orders SET status = 'held' WHERE id = 1",
        "ALTER TYPE order_status ADD VALUE 'held' AFTER 'paid';\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_status_idx ON orders (status);\n"
        "UPDATE orders SET status = 'held' WHERE id = 1",
    ),
    (
        "EX323",
        "expand",
        "ALTER TYPE order_status ADD VALUE 'held' AFTER 'paid';\nALTER TABLE orders ALTER COLUMN status SET DEFAULT 'held'",
        "ALTER TYPE order_status ADD VALUE 'held' AFTER 'paid';\nALTER TABLE orders ALTER COLUMN status SET DEFAULT 'paid'",
    ),
    # constraints, continued
    (
        "EX404",
        "expand",
        "ALTER TABLE products ADD CONSTRAINT fk_shop FOREIGN KEY (shop_id) REFERENCES shops (id) NOT VALID;\n"
        "ALTER TABLE products VALIDATE CONSTRAINT fk_shop",
        "ALTER TABLE products ADD CONSTRAINT fk_shop FOREIGN KEY (shop_id) REFERENCES shops (id) NOT VALID;\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS products_shop_idx ON products (shop_id);\n"
        "ALTER TABLE products VALIDATE CONSTRAINT fk_shop",
    ),
    (
        "EX404",
        "contract",
        "ALTER TABLE products ADD CONSTRAINT price_positive CHECK (price > 0) NOT VALID, "
        "VALIDATE CONSTRAINT price_positive",
        "ALTER TABLE products VALIDATE CONSTRAINT price_positive",
    ),
    # locking, continued
    (
        "EX505",
        "contract",
        "ALTER TABLE events DETACH PARTITION events_2020",
        "ALTER TABLE events DETACH PARTITION events_2020 CONCURRENTLY",
    ),
    # data, continued
    (
        "EX602",
        "expand",
        "UPDATE products SET name = title WHERE name IS NULL",
        "UPDATE products SET name = title WHERE id = 42",
    ),
    (
        "EX602",
        "contract",
        "DELETE FROM sessions WHERE created_at < now() - interval '30 days'",
        "DELETE FROM sessions WHERE id IN (1, 2, 3) AND created_at < now()",
    ),
    (
        "EX602",
        "expand",
        "UPDATE orders SET status = 'paid' WHERE status = 'settled'",
        "UPDATE orders SET status = 'paid' WHERE order_id = 7",
    ),
    (
        "EX603",
        "expand",
        "DO $$ DECLARE r record; BEGIN FOR r IN SELECT id FROM products LOOP "
        "UPDATE products SET name = title WHERE id = r.id; END LOOP; END $$",
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_type WHERE typname = 'mood') THEN "
        "CREATE TYPE mood AS ENUM ('ok'); END IF; END $$",
    ),
    (
        "EX603",
        "rollback",
        "DO $$ BEGIN EXECUTE 'DELETE FROM products WHERE id > 0'; END $$",
        "DO $$ BEGIN EXECUTE 'DROP TABLE IF EXISTS tmp'; END $$",
    ),
    # transactions, continued
    (
        "EX702",
        "expand",
        "DO $$ DECLARE r record; BEGIN FOR r IN SELECT id FROM products LOOP PERFORM 1; COMMIT; END LOOP; END $$",
        "DO $$ DECLARE r record; BEGIN FOR r IN SELECT id FROM products LOOP PERFORM 1; END LOOP; END $$",
    ),
    # the old code in expand
    (
        "EX901",
        "expand",
        "ALTER TABLE products ALTER COLUMN title SET NOT NULL",
        "ALTER TABLE products ADD CONSTRAINT title_nn CHECK (title IS NOT NULL) NOT VALID",
    ),
    (
        "EX901",
        "expand",
        "ALTER TABLE products ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY",
        "ALTER TABLE products ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY",
    ),
    (
        "EX901",
        "expand",
        "ALTER TABLE products ENABLE ROW LEVEL SECURITY",
        "CREATE POLICY shop_isolation ON products USING (shop_id = current_setting('app.shop')::uuid);\n"
        "ALTER TABLE products ENABLE ROW LEVEL SECURITY",
    ),
    ("EX901", "expand", "REVOKE UPDATE ON products FROM app_user", "GRANT SELECT ON products TO app_user"),
    # rollback, statement by statement
    (
        "EX905",
        "rollback",
        "DROP INDEX CONCURRENTLY idx_products_name",
        "DROP INDEX CONCURRENTLY IF EXISTS idx_products_name",
    ),
    (
        "EX905",
        "rollback",
        "ALTER TABLE products DROP COLUMN name",
        "ALTER TABLE products DROP COLUMN IF EXISTS name",
    ),
    ("EX905", "rollback", "DROP TRIGGER sync ON products", "DROP TRIGGER IF EXISTS sync ON products"),
    (
        "EX905",
        "rollback",
        "ALTER TABLE products ADD COLUMN title text",
        "ALTER TABLE products ADD COLUMN IF NOT EXISTS title text",
    ),
    (
        "EX905",
        "rollback",
        "ALTER TABLE products ADD CONSTRAINT c CHECK (price > 0) NOT VALID",
        "ALTER TABLE products DROP CONSTRAINT IF EXISTS c, ADD CONSTRAINT c CHECK (price > 0) NOT VALID",
    ),
    (
        "EX905",
        "rollback",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    ),
    (
        "EX905",
        "rollback",
        "CREATE TABLE legacy (id bigint)",
        "CREATE TABLE IF NOT EXISTS legacy (id bigint)",
    ),
    # syntax
    (
        "EX001",
        "expand",
        "ALTER TABLE products ADD COLUM name text",
        "ALTER TABLE products ADD COLUMN name text",
    ),
]


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


@pytest.mark.parametrize(
    ("code", "phase", "bad", "good"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_rule_trips_and_safe_form_passes(code: str, phase: Phase, bad: str, good: str) -> None:
    found = lint_sql(bad, f"{phase}.sql", phase)
    assert code in codes(found), found
    assert all(str(f).startswith(f"{phase}.sql:") for f in found)
    assert code not in codes(lint_sql(good, f"{phase}.sql", phase))


def test_every_rule_has_a_case_and_an_alternative() -> None:
    # the others compare files or read the spec: test_lint_suppressions, test_lint_migration, test_lint_phases
    covered = {c[0] for c in CASES} | {"EX002", "EX003", "EX005", "EX104", "EX902", "EX903", "EX904", "EX906"}
    assert covered == {rule.code for rule in RULES}
    assert len({rule.code for rule in RULES}) == len(RULES)
    for rule in RULES:
        assert rule.alternative and rule.name


def test_finding_format_and_line() -> None:
    sql = "-- expand\nALTER TABLE products ADD COLUMN name text;\n\nCREATE INDEX i\n  ON products (name);\n"
    (finding,) = lint_sql(sql, "shop/expand.sql", "expand")
    assert finding.line == 4
    assert str(finding) == (
        "shop/expand.sql:4: EX201 builds i on products without CONCURRENTLY: writes to it wait for the whole "
        f"build — {finding.alternative}"
    )


def test_syntax_error_names_its_line() -> None:
    (finding,) = lint_sql("SELECT 1;\n\nALTER TABL products DROP COLUMN title;\n", "contract.sql", "contract")
    assert (finding.code, finding.line) == ("EX001", 3)
    assert "does not parse" in finding.message


@pytest.mark.parametrize(
    ("phase", "expected"),
    [("expand", {"EX101", "EX102"}), ("contract", {"EX102"}), ("rollback", set())],
)
def test_drops_and_renames_depend_on_the_phase(phase: Phase, expected: set[str]) -> None:
    sql = "ALTER TABLE products DROP COLUMN IF EXISTS title;\nALTER TABLE products RENAME COLUMN a TO b;\n"
    assert set(codes(lint_sql(sql, "x.sql", phase))) == expected


def test_drop_index_without_concurrently_is_a_finding_in_every_phase() -> None:
    for phase in ("expand", "contract", "rollback"):
        assert "EX202" in codes(lint_sql("DROP INDEX idx_products_name", "x.sql", phase))  # type: ignore[arg-type]


def test_set_not_null_needs_the_check_validated_not_just_added() -> None:
    sql = (
        "ALTER TABLE products ADD CONSTRAINT n CHECK (name IS NOT NULL) NOT VALID;\n"
        "ALTER TABLE products ALTER COLUMN name SET NOT NULL;\n"
    )
    assert codes(lint_sql(sql, "contract.sql", "contract")) == ["EX304"]
    # a CHECK proving several columns (an AND of IS NOT NULL) covers each of them once validated
    sql = (
        "ALTER TABLE products ADD CONSTRAINT nn CHECK (name IS NOT NULL AND sku IS NOT NULL) NOT VALID;\n"
        "ALTER TABLE products VALIDATE CONSTRAINT nn;\n"
        "ALTER TABLE products ALTER COLUMN sku SET NOT NULL, ALTER COLUMN name SET NOT NULL;\n"
        "ALTER TABLE products ALTER COLUMN price SET NOT NULL;\n"
    )
    found = [f for f in lint_sql(sql, "contract.sql", "contract") if f.code == "EX304"]
    assert [(f.code, f.line) for f in found] == [("EX304", 4)]
    assert "products.price" in found[0].message


def test_an_unnamed_check_is_known_by_postgres_generated_name() -> None:
    sql = (
        "ALTER TABLE products ADD CHECK (name IS NOT NULL) NOT VALID;\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS products_sku_idx ON products (sku);\n"
        "ALTER TABLE products VALIDATE CONSTRAINT products_name_check;\n"
        "ALTER TABLE products ALTER COLUMN name SET NOT NULL;\n"
    )
    assert lint_sql(sql, "contract.sql", "contract") == []


def test_new_tables_in_the_same_file_are_free_to_change() -> None:
    sql = (
        "CREATE TABLE product_tags (id bigint, product_id bigint, tag text);\n"
        "CREATE INDEX product_tags_tag ON product_tags (tag);\n"
        "ALTER TABLE product_tags ADD COLUMN weight bigint NOT NULL;\n"
        "ALTER TABLE product_tags ALTER COLUMN tag TYPE citext;\n"
        "ALTER TABLE product_tags ADD CONSTRAINT tag_known CHECK (tag <> '') NOT VALID;\n"
        "ALTER TABLE product_tags VALIDATE CONSTRAINT tag_known;\n"
        "ALTER TABLE product_tags ADD CONSTRAINT fk FOREIGN KEY (product_id) REFERENCES products (id);\n"
        "ALTER TABLE product_tags ADD PRIMARY KEY (id);\n"
        "ALTER TABLE product_tags ALTER COLUMN tag SET NOT NULL;\n"
    )
    assert lint_sql(sql, "expand.sql", "expand") == []


def test_concurrently_after_commit_is_fine_but_inside_begin_is_not() -> None:
    sql = (
        "BEGIN;\nALTER TABLE products ADD COLUMN name text;\nCOMMIT;\n"
        "CREATE INDEX CONCURRENTLY i ON products (name);\n"
    )
    assert "EX701" not in codes(lint_sql(sql, "expand.sql", "expand"))
    inside = "START TRANSACTION;\nDROP INDEX CONCURRENTLY i;\nCOMMIT;\n"
    assert [(f.code, f.line) for f in lint_sql(inside, "c.sql", "contract") if f.code == "EX701"] == [
        ("EX701", 2)
    ]


def test_dollar_quoted_bodies_are_not_linted_as_statements() -> None:
    sql = (
        "CREATE OR REPLACE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN\n  UPDATE products SET name = title;\n  RETURN NEW;\nEND\n$$;\n"
    )
    assert lint_sql(sql, "expand.sql", "expand") == []


def test_a_timeout_override_names_the_setting_and_the_safe_alternative() -> None:
    (finding,) = lint_sql(
        "ALTER TABLE products ADD COLUMN a bigint;\nSET LOCAL lock_timeout = 0;\n", "e.sql", "expand"
    )
    assert (finding.code, finding.line) == ("EX801", 2)
    assert finding.message.startswith("SET LOCAL lock_timeout overrides the runner's lock_timeout")
    assert "lock_timeout (and statement_timeout) in migration.yaml" in finding.alternative
    (call,) = lint_sql(
        "SELECT set_config('idle_in_transaction_session_timeout', '0', false)", "c.sql", "contract"
    )
    assert call.message.startswith("set_config('idle_in_transaction_session_timeout', ...) overrides")
    both = lint_sql("SELECT set_config('lock_timeout', '0', false), set_config('role', 'x', false)", "c.sql")
    assert codes(both) == ["EX801", "EX802"]


def test_a_suppressed_timeout_override_is_allowed() -> None:
    sql = "-- expand: allow EX801 because this lookup table is tiny\nSET lock_timeout = '5s';\n"
    assert lint_sql(sql, "expand.sql", "expand") == []


def test_create_index_concurrently_if_not_exists_is_the_recommended_form() -> None:
    for phase in ("expand", "contract", "rollback"):
        sql = "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS i ON products (name)"
        assert lint_sql(sql, "x.sql", phase) == []  # type: ignore[arg-type]
    (finding,) = lint_sql("CREATE INDEX i ON products (name)", "x.sql", "expand")
    assert "CREATE INDEX CONCURRENTLY IF NOT EXISTS" in finding.alternative


def test_the_rules_table_in_the_docs_lists_every_rule() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[3] / "docs" / "lint.md").read_text(encoding="utf-8")
    rows = [line.split(" | ")[:2] for line in text.splitlines() if line.startswith("| EX")]
    assert rows == [[f"| {rule.code}", f"`{rule.name}`"] for rule in RULES]


@pytest.mark.parametrize(
    ("sql", "code"),
    [
        ("ALTER TABLE products ALTER COLUMN title DROP NOT NULL", "EX305"),
        ("ALTER TABLE products ALTER COLUMN title SET NOT NULL", "EX901"),
        ("REVOKE UPDATE ON products FROM app_user", "EX901"),
        ("ALTER TABLE products DROP COLUMN title", "EX101"),
    ],
)
def test_what_breaks_the_old_code_in_expand_is_the_point_of_contract(sql: str, code: str) -> None:
    (finding,) = [f for f in lint_sql(sql, "expand.sql", "expand") if f.code == code]
    assert "contract" in finding.message  # the message says which phase is right
    assert code not in codes(lint_sql(sql, "contract.sql", "contract"))


def test_an_unpinned_update_is_one_finding_not_two() -> None:
    assert codes(lint_sql("UPDATE products SET name = title", "e.sql", "expand")) == ["EX601"]
    assert codes(lint_sql("UPDATE products SET name = title WHERE name IS NULL", "e.sql", "expand")) == [
        "EX602"
    ]
    assert (
        lint_sql("CREATE TABLE t (id bigint, n bigint);\nUPDATE t SET n = 1 WHERE n IS NULL", "e.sql") == []
    )


def test_identifier_length_counts_bytes_as_postgres_does() -> None:
    assert codes(lint_sql(f'ALTER TABLE products ADD COLUMN "{"ț" * 32}" text', "e.sql")) == ["EX004"]
    assert lint_sql(f'ALTER TABLE products ADD COLUMN "{"ț" * 31}" text', "e.sql") == []  # 62 bytes


def test_a_syntax_error_after_non_ascii_text_is_on_its_own_line() -> None:
    sql = (
        "-- redenumire: titlu → nume, fără întrerupere 🚀\n"
        "COMMENT ON COLUMN products.title IS 'denumirea produsului în română: ăîșțâ ăîșțâ ăîșțâ';\n"
        "ALTER TABLE products ADD COLUM name text;\n"
        "SELECT 1;\n"
    )
    (finding,) = lint_sql(sql, "expand.sql", "expand")
    assert (finding.code, finding.line) == ("EX001", 3)


def test_a_new_enum_value_is_usable_after_the_group_commits_or_in_another_phase() -> None:
    add = "ALTER TYPE order_status ADD VALUE 'held' AFTER 'paid';\n"
    use = "UPDATE orders SET status = 'held' WHERE id = 1;\n"
    assert "EX323" in codes(lint_sql(add + "SELECT 1;\n" + use, "e.sql", "expand"))
    assert "EX323" not in codes(lint_sql(use, "c.sql", "contract"))


def test_near_misses_the_rules_leave_alone() -> None:
    """Forms PostgreSQL accepts that look like what a rule refuses (found linting PostgreSQL's own tests)."""
    legal = [
        "UPDATE arrays SET b[1] = 1, b[2] = 2 WHERE id = 1",  # element assignments, not the column twice
        "INSERT INTO t (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET f[1] = 1, f[3] = 3",
        # a type created in the same transaction may use its new label at once
        "CREATE TYPE mood AS ENUM ('ok');\nALTER TYPE mood ADD VALUE 'meh' BEFORE 'ok';\nSELECT 'meh'::mood",
        "DO $$ BEGIN INSERT INTO settings (k, v) VALUES ('a', 'b'); END $$",  # the rows it lists
        "DECLARE c CURSOR FOR SELECT 1",
    ]
    for sql in legal:
        assert lint_sql(sql, "e.sql", "expand") == [], sql
