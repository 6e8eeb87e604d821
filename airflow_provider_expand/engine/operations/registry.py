"""pgroll's operation names -> the module implementing each; every module exports ``OPERATION``.

The whole vocabulary is listed, so a pgroll migration pasted under ``operations:`` is judged name by name:
an unknown name is a typo (with a suggestion), a known name whose module is not in this build says so.
"""

from __future__ import annotations

import difflib
import importlib
from functools import cache
from typing import Any

from airflow_provider_expand.engine.operations.base import Operation

_PACKAGE = "airflow_provider_expand.engine.operations"

# pgroll's name -> module in this package (pgroll's own OpName list, pkg/migrations/op_common.go)
MODULES: dict[str, str] = {
    "create_table": "create_table",
    "drop_table": "drop_table",
    "rename_table": "rename_table",
    "add_column": "add_column",
    "drop_column": "drop_column",
    "rename_column": "rename_column",
    "alter_column": "alter_column",
    "create_index": "create_index",
    "drop_index": "drop_index",
    "create_constraint": "create_constraint",
    "drop_constraint": "drop_constraint",
    "drop_multicolumn_constraint": "drop_multicolumn_constraint",
    "rename_constraint": "rename_constraint",
    "set_replica_identity": "set_replica_identity",
    "sql": "raw_sql",
}


class UnknownOperationError(ValueError):
    """A name that is not in pgroll's vocabulary, or whose module this build lacks."""


def names() -> tuple[str, ...]:
    return tuple(MODULES)


@cache
def operation_class(name: str) -> type[Operation[Any]]:
    """The class implementing operation ``name``; :class:`UnknownOperationError` naming the choices."""
    module = MODULES.get(name)
    if module is None:
        close = difflib.get_close_matches(name, MODULES, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UnknownOperationError(f"unknown operation {name!r} ({hint}known: {', '.join(MODULES)})")
    try:
        loaded = importlib.import_module(f"{_PACKAGE}.{module}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{_PACKAGE}.{module}":
            raise
        raise UnknownOperationError(f"operation {name!r} is not implemented in this version") from exc
    cls: type[Operation[Any]] = loaded.OPERATION
    return cls
