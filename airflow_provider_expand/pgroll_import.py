"""``airflow-expand import-pgroll FILE...``: pgroll migration files (JSON or YAML) as migration folders.

The ``operations`` list is copied as it is (same names, same fields); the migration id is the file's name
(pgroll names a migration after its file), or ``version_schema`` when the file sets one, since our
version schema is named after the migration. Each folder is loaded back before it is kept, so a file this
provider cannot run is refused with the loader's error, and nothing is left half written.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from airflow_provider_expand.spec import SPEC_FILE, SpecError, load_migration

_PGROLL_KEYS = {"name", "version_schema", "operations"}


class PgrollImportError(ValueError):
    """A pgroll file that cannot become a migration folder: names the file."""


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PgrollImportError(f"{path}: cannot be read: {exc}") from exc
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise PgrollImportError(
            f"{path}: is not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {exc}"
        ) from exc
    if not isinstance(data, dict) or "operations" not in data:
        raise PgrollImportError(f"{path}: not a pgroll migration (a mapping with 'operations')")
    unknown = sorted(set(data) - _PGROLL_KEYS)
    if unknown:
        raise PgrollImportError(
            f"{path}: unknown key(s) {', '.join(unknown)} (pgroll allows {', '.join(sorted(_PGROLL_KEYS))})"
        )
    return data


def migration_id(path: Path, data: dict[str, Any]) -> str:
    """The id of the migration a pgroll file becomes: its version_schema, else its name, lower-cased."""
    raw = str(data.get("version_schema") or data.get("name") or path.stem)
    ident = re.sub(r"[^a-z0-9_]+", "_", raw.lower()).strip("_")
    if not ident:
        raise PgrollImportError(f"{path}: cannot make a migration id of {raw!r}")
    return ident[:63]


def import_pgroll(path: Path, directory: Path, *, postgres_conn_id: str, soak: str | None = None) -> Path:
    """Write ``directory/<id>/migration.yaml`` for the pgroll file ``path``; returns the folder."""
    data = _read(path)
    mid = migration_id(path, data)
    folder = directory / mid
    if folder.exists():
        raise PgrollImportError(f"{path}: {folder} already exists; remove it or import into another --dir")
    spec: dict[str, Any] = {
        "id": mid,
        "description": f"imported from pgroll migration {path.name}",
        "postgres_conn_id": postgres_conn_id,
    }
    if soak:
        spec["soak"] = soak
    spec["operations"] = data["operations"]
    folder.mkdir(parents=True)
    (folder / SPEC_FILE).write_text(
        yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
    try:
        load_migration(folder)
    except SpecError as exc:
        shutil.rmtree(folder)
        raise PgrollImportError(f"{path}: cannot be imported:\n{exc}") from exc
    return folder
