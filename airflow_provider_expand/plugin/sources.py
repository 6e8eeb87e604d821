"""Where the migration view reads from: the specs in the migrations folder the DAG files load, and the
ledgers of the connections those specs name (``postgres_conn_id``, ``ledger_schema``)."""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_provider_expand.engine.ledger.decisions import Decisions
from airflow_provider_expand.engine.ledger.overview import migration_overview
from airflow_provider_expand.engine.ledger.store import Ledger
from airflow_provider_expand.engine.redact import redact_url
from airflow_provider_expand.hooks.postgres import postgres_connector
from airflow_provider_expand.spec import MigrationSpec, SpecError, find_migrations, load_migration

log = logging.getLogger(__name__)

# ``[expand] migrations_folder`` (os.pathsep-separated); else the DAGs folder, searched below
CONFIG_SECTION, CONFIG_KEY = "expand", "migrations_folder"


def migrations_folders() -> list[Path]:
    from airflow.configuration import conf

    configured = conf.get(CONFIG_SECTION, CONFIG_KEY, fallback="") or ""
    folders = [Path(p) for p in configured.split(os.pathsep) if p.strip()]
    return folders or [Path(conf.get("core", "dags_folder"))]


def load_specs(folders: Iterable[Path]) -> list[MigrationSpec]:
    """Every spec that loads; a broken folder is logged (its DAG shows the error) and left out."""
    specs: list[MigrationSpec] = []
    for folder in folders:
        try:
            paths = find_migrations(folder)
        except SpecError as exc:
            log.warning("migration view: %s", exc)
            continue
        for path in paths:
            try:
                specs.append(load_migration(path))
            except (SpecError, OSError, ValueError) as exc:
                log.warning("migration view: %s does not load: %s", path, exc)
    return specs


@dataclass
class Overview:
    """The view's data: one entry per migration in any ledger, and each ledger's reachability."""

    migrations: list[dict[str, Any]] = field(default_factory=list)
    ledgers: list[dict[str, Any]] = field(default_factory=list)


def read_overview(specs: list[MigrationSpec], *, now: dt.datetime | None = None) -> Overview:
    """Read each (connection, schema) ledger once; a ledger that cannot be read is reported, not fatal."""
    now = now or dt.datetime.now(dt.UTC)
    groups: dict[tuple[str, str], list[MigrationSpec]] = defaultdict(list)
    for spec in specs:
        groups[(spec.postgres_conn_id, spec.ledger_schema)].append(spec)
    overview = Overview()
    for (conn_id, schema), members in sorted(groups.items()):
        by_id = {s.id: s for s in members}
        ledger, decisions = Ledger(schema), Decisions(schema)
        source: dict[str, Any] = {"postgres_conn_id": conn_id, "schema": schema, "error": None}
        try:
            with postgres_connector(conn_id, application_name="airflow-expand-ui")() as conn:
                conn.autocommit = True
                records = ledger.migrations(conn) if ledger.installed(conn) else []
                for record in records:
                    known = by_id.get(record.id)
                    entry = migration_overview(
                        record,
                        ledger.steps(conn, record.id),
                        decisions.list(conn, record.id),
                        soak=known.soak if known else None,
                        window=known.window if known else None,
                        now=now,
                    )
                    entry["postgres_conn_id"] = conn_id
                    entry["in_specs"] = known is not None
                    overview.migrations.append(entry)
        except Exception as exc:  # one unreachable database must not blank the whole view
            source["error"] = redact_url(f"{type(exc).__name__}: {exc}")[:500]
            log.warning("migration view: ledger %s on %s unreadable: %s", schema, conn_id, source["error"])
        source["migrations"] = sorted(by_id)
        overview.ledgers.append(source)
    return overview
