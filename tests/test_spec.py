"""The migration spec: what loads, and how every kind of mistake is reported (file, key path, why)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from airflow_provider_expand.engine.verify.checks import Check, RlsProbe
from airflow_provider_expand.spec import (
    MigrationSpec,
    SpecError,
    find_migrations,
    format_duration,
    load_migration,
    parse_duration,
)

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "dags" / "migrations" / "products_title_to_name"

FULL = """\
id: shop_plans
description: Add shops.plan
postgres_conn_id: app_db
redis_conn_id: app_redis
lock_timeout: 500ms
ddl_retries: 5
statement_timeout: PT15M
preflight: {max_transaction_age: 5m, wait: 600}
backup:
  directory: /var/backups/postgres
  max_age: 1h
  take: true
  must_contain: [products, public.shops]
queues:
  names: [sync, bulk-ops]
  drain_timeout: 30m
  pause_url: http://localhost:65000/admin/queues/pause
  resume_url: http://localhost:65000/admin/queues/resume
expand: {image: "app/backend:1.3.0", command: [pnpm, --filter, "@app/database", run, migrate]}
deploy:
  container: backend-worker
  image: app/backend-worker:1.3.0
  health_url: http://localhost:65000/health/ready
  watch: 15m
  escalate_after: 1h30m
  max_5xx_rate: 0.01
notify:
  smtp: {to: [oncall@example.com]}
backfill:
  - {table: shops, set: plan = 'free', where: plan IS NULL, batch_size: 500, partitions: 4, pause: 0}
indexes:
  - {name: idx_shops_plan, table: shops, columns: [plan], unique: false, using: btree}
soak: 24h
contract: contract.sql
contract_window: "22:00-02:00"
rollback: rollback.sql
verify:
  - {name: plans set, sql: SELECT count(*) FROM shops WHERE plan IS NULL, expect: 0, after: both}
  - name: isolation
    rls: {table: shops, role: app_user, setting: app.current_shop_id, value: 42}
    expect: 0
  - {name: fast, sql: "SELECT 1", max_ms: 100, timeout: 30s}
  - {name: ready, http: "http://localhost:65000/health/ready", expect_status: 200, after: expand}
ledger_schema: expand_ledger
tags: [shops]
"""


def write(
    tmp_path: Path, yaml_text: str, files: tuple[str, ...] = ("expand.sql",), name: str = "mig"
) -> Path:
    folder = tmp_path / name
    folder.mkdir(parents=True)
    (folder / "migration.yaml").write_text(yaml_text)
    for file in files:
        (folder / file).write_text("SELECT 1;\n")
    return folder


MINIMAL = "id: mig\npostgres_conn_id: app_db\nexpand: expand.sql\n"


def problems(folder: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_migration(folder)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def test_the_example_migration_loads() -> None:
    spec = load_migration(EXAMPLE)
    assert spec.id == "products_title_to_name"
    assert spec.lock_timeout == dt.timedelta(seconds=2)
    assert spec.soak == dt.timedelta(hours=24)
    assert spec.backfill[0].target_batch_time == dt.timedelta(milliseconds=50)
    assert spec.backfill[0].pause == dt.timedelta(0) and spec.backfill[0].health is None
    assert spec.backfill[0].step_name == "backfill:products"
    assert spec.indexes[0].step_name == "index:idx_products_name"
    assert spec.queues is not None and spec.queues.names == ("sync",)
    assert spec.sql_files() == {p: EXAMPLE / f"{p}.sql" for p in ("expand", "contract", "rollback")}
    assert [c.name for c in spec.checks_after("expand")] == ["every product has a shop", "tenant isolation"]
    assert len(spec.checks_after("contract")) == 4


def test_every_key_loads_and_durations_are_timedeltas(tmp_path: Path) -> None:
    spec = load_migration(write(tmp_path, FULL, ("contract.sql", "rollback.sql")))
    assert spec.lock_timeout == dt.timedelta(milliseconds=500)
    assert spec.statement_timeout == dt.timedelta(minutes=15)
    assert spec.preflight.wait == dt.timedelta(minutes=10)
    assert spec.deploy is not None and spec.deploy.escalate_after == dt.timedelta(hours=1, minutes=30)
    assert spec.backfill[0].pause == dt.timedelta(0) and spec.backfill[0].partitions == 4
    assert spec.migrator is not None and spec.migrator.command[0] == "pnpm"
    assert spec.sql_path("expand") is None and spec.sql_path("contract") == spec.folder / "contract.sql"
    assert spec.window is not None and spec.window.contains(dt.time(1, 0))
    assert spec.queues is not None and spec.queues.names == ("sync", "bulk-ops")
    assert spec.notify is not None and spec.notify.events == ("failure", "rollback", "completion")
    assert spec.ledger_schema == "expand_ledger"
    assert [v.kind for v in spec.verify] == ["sql", "rls", "latency", "http"]
    assert spec.verify[1].as_check() == Check(
        name="isolation",
        rls=RlsProbe(table="shops", role="app_user", setting="app.current_shop_id", value="42"),
        expect=0,
        expect_status=200,
    )
    assert spec.verify[2].as_check().timeout_seconds == 30.0
    with pytest.raises(ValidationError):
        spec.id = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", dt.timedelta(milliseconds=500)),
        ("30s", dt.timedelta(seconds=30)),
        ("5m", dt.timedelta(minutes=5)),
        ("1h", dt.timedelta(hours=1)),
        ("24h", dt.timedelta(hours=24)),
        ("1h30m", dt.timedelta(minutes=90)),
        ("2d", dt.timedelta(days=2)),
        ("PT5M", dt.timedelta(minutes=5)),
        ("P1DT2H", dt.timedelta(hours=26)),
        (90, dt.timedelta(seconds=90)),
        (0.25, dt.timedelta(milliseconds=250)),
        ("45", dt.timedelta(seconds=45)),
    ],
)
def test_durations(text: object, expected: dt.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["5 parsecs", "-1s", -5, "P1M", "PTX", "", True, None, "1.5.2h", float("inf")]
)
def test_bad_durations_say_what_is_accepted(text: object) -> None:
    with pytest.raises(ValueError, match=r"is not a duration|months or years"):
        parse_duration(text)


def test_durations_print_back_in_spec_form() -> None:
    assert [format_duration(parse_duration(t)) for t in ("24h", "90m", "500ms", "0", "PT1M30S")] == [
        "24h",
        "1h30m",
        "500ms",
        "0s",
        "1m30s",
    ]


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    folder = write(tmp_path, "id: mig\npostgres_conn_id: app_db\nexpand: [expand.sql\nsoak: 1h\n")
    (problem,) = problems(folder)
    assert re.match(r"^mig/migration\.yaml:4: malformed YAML: ", problem), problem


def test_a_key_given_twice_is_an_error_with_both_lines(tmp_path: Path) -> None:
    folder = write(tmp_path, MINIMAL + "soak: 1h\nsoak: 2h\n")
    assert problems(folder) == [
        "mig/migration.yaml:5: malformed YAML: key 'soak' given twice (first on line 4)"
    ]


def test_unknown_keys_are_errors_with_a_suggestion(tmp_path: Path) -> None:
    folder = write(
        tmp_path,
        MINIMAL
        + "soke: 1h\nbackfill:\n  - {table: products, set: a = b, where: a IS NULL, batch_sise: 10}\n",
    )
    found = problems(folder)
    assert found[0].startswith(
        "mig/migration.yaml: backfill[0].batch_sise: unknown key (did you mean 'batch_size'?"
    )
    assert found[1].startswith("mig/migration.yaml: soke: unknown key (did you mean 'soak'? allowed: id, ")
    assert "folder" not in found[1]


def test_a_missing_sql_file(tmp_path: Path) -> None:
    folder = write(tmp_path, MINIMAL + "contract: contract.sql\n")
    assert problems(folder) == ["mig/migration.yaml: contract: file contract.sql not found in mig/"]


def test_a_sql_file_outside_the_folder(tmp_path: Path) -> None:
    (tmp_path / "shared.sql").write_text("SELECT 1;")
    folder = write(tmp_path, MINIMAL + "rollback: ../shared.sql\n")
    assert problems(folder) == [
        "mig/migration.yaml: rollback: '../shared.sql' must be a file inside the migration folder"
    ]


def test_a_bad_duration(tmp_path: Path) -> None:
    folder = write(tmp_path, MINIMAL + "lock_timeout: 2 parsecs\n")
    (problem,) = problems(folder)
    assert problem.startswith(
        "mig/migration.yaml: lock_timeout: '2 parsecs' is not a duration: use 500ms, 30s"
    )
    folder = write(tmp_path, MINIMAL + "lock_timeout: 0s\n", name="zero")
    assert problems(folder) == ["zero/migration.yaml: lock_timeout: must be longer than zero"]


@pytest.mark.parametrize("key", ["batch_size", "partitions"])
@pytest.mark.parametrize("value", [0, -3])
def test_backfill_sizes_must_be_positive(tmp_path: Path, key: str, value: int) -> None:
    folder = write(
        tmp_path,
        MINIMAL
        + f"backfill:\n  - {{table: products, set: name = title, where: name IS NULL, {key}: {value}}}\n",
    )
    assert problems(folder) == [f"mig/migration.yaml: backfill[0].{key}: must be greater than 0"]


def test_a_backfill_key_is_one_column_or_a_list(tmp_path: Path) -> None:
    """``key: id`` or ``key: [shop_id, id]`` (a composite key, walked as a row); a bad name is named."""
    base = MINIMAL + "backfill:\n  - {table: orders, set: name = title, where: name IS NULL, key: %s}\n"
    assert load_migration(write(tmp_path / "one", base % "id")).backfill[0].key == ("id",)
    assert load_migration(write(tmp_path / "two", base % "[shop_id, id]")).backfill[0].key == (
        "shop_id",
        "id",
    )
    found = problems(write(tmp_path / "bad", base % "[shop_id, 'not a name']"))
    assert len(found) == 1 and found[0].startswith("mig/migration.yaml: backfill[0].key"), found


@pytest.mark.parametrize("bad", ["Products_Rename", "rename-products", "réname", "''"])
def test_a_bad_id(tmp_path: Path, bad: str) -> None:
    folder = write(tmp_path, MINIMAL.replace("id: mig", f"id: {bad}"))
    (problem,) = problems(folder)
    assert problem.startswith("mig/migration.yaml: id: ") and "is not a migration id" in problem


def test_queues_need_a_redis_connection(tmp_path: Path) -> None:
    folder = write(tmp_path, MINIMAL + "queues: {names: [sync]}\n")
    assert problems(folder) == [
        "mig/migration.yaml: queues: needs redis_conn_id (the Airflow connection of the Redis holding the queues)"
    ]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "{name: a, sql: SELECT 1, http: 'http://x/', expect: 1}",
            "a check needs exactly one of sql + expect, ",
        ),
        (
            "{name: a, sql: SELECT 1, rls: {table: t, role: r, setting: a.b, value: v}, expect: 0}",
            "(has sql and rls)",
        ),
        ("{name: a}", "a check needs exactly one of"),
        ("{name: a, sql: SELECT 1, expect: 1, max_ms: 5}", "sql takes expect or max_ms, not both"),
        ("{name: a, sql: SELECT 1}", "sql needs expect or max_ms"),
        ("{name: a, http: 'http://x/', expect: 200}", "http cannot take expect"),
        ("{name: a, rls: {table: t, role: r, setting: a.b, value: v}, max_ms: 3}", "rls cannot take max_ms"),
    ],
)
def test_a_verify_entry_has_exactly_one_kind(tmp_path: Path, entry: str, message: str) -> None:
    folder = write(tmp_path, MINIMAL + f"verify:\n  - {{name: ok, sql: SELECT 1, expect: 1}}\n  - {entry}\n")
    (problem,) = problems(folder)
    assert problem.startswith("mig/migration.yaml: verify[1]: ") and message in problem, problem


def test_every_problem_is_listed_one_per_line(tmp_path: Path) -> None:
    folder = write(
        tmp_path,
        "id: Bad\npostgres_conn_id: app_db\nexpand: nope.sql\nddl_retries: -1\n"
        "indexes:\n  - {name: 'idx; DROP TABLE x', table: products, columns: []}\n",
    )
    assert problems(folder) == [
        "mig/migration.yaml: id: 'Bad' is not a migration id: use lower-case letters, digits and _",
        "mig/migration.yaml: ddl_retries: must be greater than or equal to 0",
        "mig/migration.yaml: expand: file nope.sql not found in mig/",
        "mig/migration.yaml: indexes[0].name: 'idx; DROP TABLE x' is not a plain identifier "
        "(letters, digits, _ and $, not starting with a digit)",
        "mig/migration.yaml: indexes[0].columns: must not be empty",
    ]


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        (
            "backfill:\n  - {table: 'products p', set: a = b, where: a IS NULL}",
            "backfill[0].table: 'products p' is not a table name",
        ),
        (
            "backfill:\n  - {table: products, set: a = b WHERE c, where: c}",
            "backfill[0].set: 'a = b WHERE c' must be assignments",
        ),
        (
            "backfill:\n  - {table: products, set: 'a = b, c = 1, a = 2', where: a IS NULL}",
            "backfill[0].set: 'a = b, c = 1, a = 2' assigns a more than once",
        ),
        (
            "backfill:\n  - {table: products, set: 'a = b; DROP TABLE x', where: a IS NULL}",
            "backfill[0].set: must be a single SQL statement",
        ),
        (
            "backfill:\n  - {table: products, set: a = b, where: 'a IS NULL ORDER BY 1'}",
            "backfill[0].where: ",
        ),
        (
            "backfill:\n  - {table: products, set: a = b, where: 'a IS NUL'}",
            "backfill[0].where: does not parse",
        ),
        ("verify:\n  - {name: x, sql: DELETE FROM t, expect: 0}", "verify[0].sql: must be one SELECT"),
        ("queues: {names: ['sync*']}\nredis_conn_id: r", "queues.names[0]: 'sync*' is not a queue name"),
        ("backup: {directory: backups}", "backup.directory: 'backups' must be an absolute path"),
        (
            "backup: {directory: 's3://conn@/x'}",
            "backup.directory: 's3://conn@/x': an object storage URL names its",
        ),
        ("deploy: {container: w, image: i, health_url: 'localhost:65000/health'}", "deploy.health_url: "),
        ("contract: expand.sql", "expand and contract both name expand.sql"),
        ("contract_window: '02:00-05:00'", "contract_window: there is no contract to schedule"),
        ("notify: {deadline: 2h}", "notify.deadline: needs a notifier to send it (smtp)"),
        ("notify: {smtp: {to: [a@example.com]}, deadline: later}", "notify.deadline: "),
        (
            "backfill:\n  - {table: products, set: a = b, where: a IS NULL}\n  - {table: products, set: c = d, where: c IS NULL}",
            "backfill: table products appears twice ([0] and [1])",
        ),
    ],
)
def test_bad_values_name_their_key(tmp_path: Path, snippet: str, expected: str) -> None:
    folder = write(tmp_path, MINIMAL + snippet + "\n")
    found = problems(folder)
    assert any(p.startswith("mig/migration.yaml: ") and expected in p for p in found), found


def test_contract_window_is_checked(tmp_path: Path) -> None:
    folder = write(
        tmp_path, MINIMAL + "contract: c.sql\ncontract_window: '2:00-25:00'\n", ("expand.sql", "c.sql")
    )
    assert problems(folder) == [
        "mig/migration.yaml: contract_window: contract window '2:00-25:00' is not of the form HH:MM-HH:MM (UTC)"
    ]


def test_contract_approval_is_checked(tmp_path: Path) -> None:
    files = ("expand.sql", "c.sql")
    good = write(
        tmp_path, MINIMAL + "contract: c.sql\ncontract_approval: {approvers: [alice], timeout: 4h}\n", files
    )
    approval = load_migration(good).contract_approval
    assert approval is not None and approval.approvers == ("alice",)
    assert approval.timeout == dt.timedelta(hours=4)
    bad = write(tmp_path / "bad", MINIMAL + "contract: c.sql\ncontract_approval: {timeout: soon}\n", files)
    found = problems(bad)
    assert len(found) == 1 and found[0].startswith("mig/migration.yaml: contract_approval.timeout: "), found
    assert "'soon'" in found[0], found
    unknown = write(
        tmp_path / "unknown", MINIMAL + "contract: c.sql\ncontract_approval: {approver: bob}\n", files
    )
    assert any("contract_approval.approver" in p for p in problems(unknown)), problems(unknown)
    without = write(tmp_path / "without", MINIMAL + "contract_approval: {timeout: 1h}\n")
    assert any("contract_approval: there is no contract to approve" in p for p in problems(without))


def test_nothing_to_do(tmp_path: Path) -> None:
    folder = write(tmp_path, "id: mig\npostgres_conn_id: app_db\n", ())
    assert problems(folder) == [
        "mig/migration.yaml: nothing to do: give at least one of operations, expand, backfill, indexes, contract"
    ]


def test_missing_folder_and_missing_spec_file(tmp_path: Path) -> None:
    assert problems(tmp_path / "nowhere") == [f"{tmp_path / 'nowhere'}: no such migration folder"]
    (tmp_path / "empty").mkdir()
    (problem,) = problems(tmp_path / "empty")
    assert problem.startswith(f"{tmp_path / 'empty'}: has no migration.yaml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "mig/migration.yaml: is empty; it needs at least id, postgres_conn_id and expand"),
        ("- a\n- b\n", "mig/migration.yaml: must be a mapping of keys (id, postgres_conn_id, expand, ...)"),
        (
            MINIMAL + "folder: /etc\n",
            "mig/migration.yaml: folder: unknown key (the folder is where migration.yaml lives)",
        ),
        (MINIMAL + "1: x\n", "mig/migration.yaml:4: malformed YAML: key 1 is not text (quote it)"),
    ],
)
def test_not_a_spec(tmp_path: Path, text: str, expected: str) -> None:
    assert problems(write(tmp_path, text)) == [expected]


def test_find_migrations(tmp_path: Path) -> None:
    write(tmp_path, MINIMAL, name="b_second")
    write(tmp_path, MINIMAL, name="a_first")
    write(tmp_path, MINIMAL, name="team/c_nested")
    write(tmp_path, MINIMAL, name=".trash/old")
    (tmp_path / "notes").mkdir()
    assert find_migrations(tmp_path) == [
        tmp_path / "a_first",
        tmp_path / "b_second",
        tmp_path / "team" / "c_nested",
    ]
    assert find_migrations(REPO / "dags" / "migrations")[0] == EXAMPLE
    with pytest.raises(SpecError, match="no such folder of migrations"):
        find_migrations(tmp_path / "missing")


def test_the_model_can_be_built_directly() -> None:
    spec = MigrationSpec(folder=EXAMPLE, id="direct", postgres_conn_id="db", expand="expand.sql")
    assert spec.sql_path("expand") == EXAMPLE / "expand.sql" and spec.ledger_schema == "airflow_expand"
