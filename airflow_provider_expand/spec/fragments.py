"""SQL fragments in a spec (a backfill's ``set`` and ``where``, a partial index's ``where``, a check's
query), parsed with pglast at load time so a typo fails before the DAG runs, not halfway through it.

Parsing only: no database is consulted, so a wrong column name is still found later, by the engine.
"""

from __future__ import annotations

from typing import Annotated

from pglast import ast
from pydantic import AfterValidator

from airflow_provider_expand.engine.statements import (
    FragmentError,
    parse_assignments,
    parse_fragment,
    parse_predicate,
)


def _parse_one(text: str) -> ast.Node:
    node = parse_fragment(text)
    if node is None:
        raise ValueError("must be a single SQL statement (no ';')")
    return node


def _assignments(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    try:
        parse_assignments(value)
    except FragmentError as exc:
        if exc.rule == "syntax":
            raise
        if exc.rule == "several":
            raise ValueError("must be a single SQL statement (no ';')") from exc
        if exc.rule == "duplicate":
            raise ValueError(f"{value!r} {exc}") from exc
        raise ValueError(
            f"{value!r} must be assignments only, such as 'name = title'; put the condition in 'where'"
        ) from exc
    return value


def _predicate(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    try:
        parse_predicate(value)
    except FragmentError as exc:
        if exc.rule == "syntax":
            raise
        if exc.rule == "several":
            raise ValueError("must be a single SQL statement (no ';')") from exc
        raise ValueError(f"{value!r} must be a boolean condition only, such as 'name IS NULL'") from exc
    return value


def _query(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    node = _parse_one(value)
    if not isinstance(node, ast.SelectStmt):
        raise ValueError("must be one SELECT (checks run read-only)")
    return value


Assignments = Annotated[str, AfterValidator(_assignments)]
"""The ``SET`` list of an ``UPDATE`` (``name = title, price_cents = round(price * 100)``)."""

Predicate = Annotated[str, AfterValidator(_predicate)]
"""A ``WHERE`` condition."""

SelectQuery = Annotated[str, AfterValidator(_query)]
"""One ``SELECT`` (or ``WITH ... SELECT`` / ``VALUES``)."""
