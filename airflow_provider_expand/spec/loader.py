"""Reading a migration folder: YAML to :class:`MigrationSpec`, every problem turned into one line that
names the file and the key (``products_title_to_name/migration.yaml: backfill[0].batch_size: ...``).

Loading reads only the folder's files, never a database, so DAG parsing stays cheap.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from airflow_provider_expand.spec.models import MigrationSpec

SPEC_FILE = "migration.yaml"
_SKIP_DIRS = {"__pycache__", "node_modules"}


class SpecError(ValueError):
    """A migration folder that cannot be loaded; ``problems`` holds one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def display_name(folder: Path) -> str:
    """How messages name a migration's spec file: ``<folder name>/migration.yaml``."""
    return f"{folder.name}/{SPEC_FILE}"


# libyaml's C scanner when present: parsing YAML is most of a DAG file's parse time otherwise.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UniqueKeyLoader(_SafeLoader):  # type: ignore[valid-type, misc]
    """A SafeLoader that refuses a key given twice: YAML would silently keep the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is not text (quote it)", key_node.start_mark
            )
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} given twice (first on line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: Path, name: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError([f"{name}: is not UTF-8 ({exc.reason} at byte {exc.start})"]) from exc
    except OSError as exc:
        raise SpecError([f"{name}: cannot be read: {exc.strerror or exc}"]) from exc
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or str(exc)
        raise SpecError([f"{name}{line}: malformed YAML: {problem}"]) from exc
    except yaml.YAMLError as exc:
        raise SpecError([f"{name}: malformed YAML: {exc}"]) from exc
    if data is None:
        raise SpecError([f"{name}: is empty; it needs at least id, postgres_conn_id and expand"])
    if not isinstance(data, dict):
        raise SpecError([f"{name}: must be a mapping of keys (id, postgres_conn_id, expand, ...)"])
    return data


def load_migration(folder: Path | str) -> MigrationSpec:
    """Load and validate ``folder/migration.yaml``; raises :class:`SpecError` listing every problem."""
    folder = Path(folder)
    name = display_name(folder)
    if not folder.is_dir():
        raise SpecError([f"{folder}: no such migration folder"])
    path = folder / SPEC_FILE
    if not path.is_file():
        raise SpecError(
            [f"{folder}: has no {SPEC_FILE} (a migration folder holds migration.yaml + SQL files)"]
        )
    data = _read_yaml(path, name)
    if "folder" in data:
        raise SpecError([f"{name}: folder: unknown key (the folder is where migration.yaml lives)"])
    try:
        return MigrationSpec.model_validate({"folder": folder.resolve(), **data})
    except ValidationError as exc:
        raise SpecError([f"{name}: {line}" for line in describe_errors(exc.errors())]) from exc


def find_migrations(root: Path | str) -> list[Path]:
    """Every folder at or below ``root`` that holds a migration.yaml, sorted; hidden folders skipped."""
    root = Path(root)
    if not root.is_dir():
        raise SpecError([f"{root}: no such folder of migrations"])
    found = []
    for path in root.rglob(SPEC_FILE):
        relative = path.parent.relative_to(root).parts
        if any(part.startswith(".") or part in _SKIP_DIRS for part in relative):
            continue
        if path.is_file():
            found.append(path.parent)
    return sorted(found)


# -- pydantic errors as "key.path[0].key: message" --------------------------------------------------


def describe_errors(errors: Iterable[ErrorDetails]) -> list[str]:
    """One line per pydantic error, in the spec's own words."""
    lines = []
    for error in errors:
        loc = tuple(error["loc"])
        where = format_loc(loc)
        message = _message(error, loc)
        line = f"{where}: {message}" if where else message
        if line not in lines:
            lines.append(line)
    return lines


def format_loc(loc: Sequence[int | str]) -> str:
    """``("backfill", 0, "batch_size")`` -> ``backfill[0].batch_size`` (union tags dropped)."""
    out = ""
    for item in loc:
        if isinstance(item, int):
            out += f"[{item}]"
        elif item.startswith("<") or item.startswith("function-"):
            continue
        else:
            out += f".{item}" if out else item
    return out


def _message(error: ErrorDetails, loc: tuple[int | str, ...]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown key" + _suggestion(loc)
    if kind in ("too_short", "string_too_short"):
        return (
            "must not be empty" if ctx.get("min_length") == 1 else f"needs at least {ctx.get('min_length')}"
        )
    if kind == "too_long":
        return f"has more than {ctx.get('max_length')} items"
    message = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    if message.startswith("Input should be"):
        message = "must be" + message[len("Input should be") :]
    return message


def _suggestion(loc: tuple[int | str, ...]) -> str:
    model = _model_at(MigrationSpec, loc[:-1])
    if model is None or not isinstance(loc[-1], str):
        return ""
    keys = [k for k in model.model_fields if k != "folder"]
    close = difflib.get_close_matches(loc[-1], keys, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f" ({hint}allowed: {', '.join(keys)})"


def _model_at(model: type[BaseModel], path: Sequence[int | str]) -> type[BaseModel] | None:
    """The model class that the key path ``path`` leads to inside ``model``."""
    current: type[BaseModel] | None = model
    for item in path:
        if current is None:
            return None
        if isinstance(item, int) or item.startswith("<"):
            continue
        field = current.model_fields.get(item)
        current = _first_model(field.annotation) if field else None
    return current


def _first_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is None and not isinstance(annotation, types.UnionType):
        return None
    for arg in typing.get_args(annotation):
        found = _first_model(arg)
        if found is not None:
            return found
    return None
