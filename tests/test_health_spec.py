"""``health:`` in migration.yaml: sizes, durations, off, per-backfill overrides, and errors naming the key."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from airflow_provider_expand.dag_factory import build_migration_dag
from airflow_provider_expand.engine.health.settings import HealthSettings
from airflow_provider_expand.spec import SpecError, load_migration
from airflow_provider_expand.spec.sizes import parse_size

MB = 1024 * 1024
BASE = "id: mig\npostgres_conn_id: app_db\nexpand: expand.sql\n"
FILL = "backfill:\n  - {table: products, set: name = title, where: name IS NULL%s}\n"


def _folder(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "mig"
    folder.mkdir(parents=True)
    (folder / "migration.yaml").write_text(text)
    (folder / "expand.sql").write_text("SELECT 1;\n")
    return folder


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("64MB", 64 * MB),
        ("512kB", 512 * 1024),
        ("1.5GB", 3 * 512 * MB),
        ("100", 100),
        (2048, 2048),
        ("8 mb", 8 * MB),
    ],
)
def test_sizes(text: object, expected: int) -> None:
    assert parse_size(text) == expected


def test_rates_may_say_per_second() -> None:
    assert parse_size("50MB/s", rate=True) == parse_size("50MB", rate=True) == 50 * MB
    with pytest.raises(ValueError, match="is not a size"):
        parse_size("50MB/s")


def test_defaults_without_a_health_section(tmp_path: Path) -> None:
    spec = load_migration(_folder(tmp_path, BASE + FILL % ""))
    assert spec.health.settings(spec.backfill[0].health) == HealthSettings()
    assert HealthSettings().max_replica_lag_bytes == 64 * MB and HealthSettings().max_wal_rate is None


def test_top_level_health_with_a_per_backfill_override(tmp_path: Path) -> None:
    text = (
        BASE
        + "health:\n  max_replica_lag: 10s\n  max_wal_rate: 50MB/s\n  max_archive_backlog: off\n  max_hold: 5m\n"
        + FILL % ", health: {max_replica_lag: 8MB, vacuum: false}"
    )
    spec = load_migration(_folder(tmp_path, text))
    top = spec.health.settings()
    assert top.max_replica_lag_time == dt.timedelta(seconds=10) and top.max_replica_lag_bytes is None
    assert (
        top.max_wal_rate == 50 * MB
        and top.max_archive_backlog is None
        and top.max_hold.total_seconds() == 300
    )
    fill = spec.health.settings(spec.backfill[0].health)
    assert fill.max_replica_lag_bytes == 8 * MB and fill.max_replica_lag_time is None
    assert fill.max_wal_rate == 50 * MB and fill.vacuum is False and fill.max_hold == top.max_hold
    # the operator gets exactly these, as plain values Airflow can serialize
    task = build_migration_dag(_folder(tmp_path / "dag", text)).get_task("backfill.products")
    assert HealthSettings.from_dict(task.health) == fill


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        (
            "health:\n  max_replica_lag: 64\n",
            "health.max_replica_lag: 64 needs a unit: bytes (64MB) or time (10s)",
        ),
        ("health:\n  max_replica_lag: lots\n", "health.max_replica_lag: 'lots' is not a replica lag"),
        ("health:\n  max_wal_rate: 50 parsecs\n", "health.max_wal_rate: '50 parsecs' is not a rate"),
        ("health:\n  max_hold: 0s\n", "health.max_hold: must be longer than zero"),
        ("health:\n  max_holds: 5m\n", "health.max_holds: unknown key (did you mean 'max_hold'?"),
        ("health:\n  max_archive_backlog: -1\n", "health.max_archive_backlog"),
        (
            FILL % ", health: {max_transaction_age: soon}",
            "backfill[0].health.max_transaction_age: 'soon' is not a",
        ),
    ],
)
def test_bad_health_values_name_file_and_key(tmp_path: Path, snippet: str, expected: str) -> None:
    text = BASE + snippet
    if "backfill" not in snippet:
        text += FILL % ""
    with pytest.raises(SpecError) as info:
        load_migration(_folder(tmp_path, text))
    assert any(p.startswith(f"mig/migration.yaml: {expected}") for p in info.value.problems), (
        info.value.problems
    )
