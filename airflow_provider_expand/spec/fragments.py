"""SQL fragments in a spec (a backfill's ``set`` and ``where``, a partial index's ``where``, a check's
query), parsed with pglast at load time so a typo fails before the DAG runs, not halfway through it.

Parsing only: no database is consulted, so a wrong column name is still found later, by the engine.
"""

from __future__ import annotations

from typing import Annotated

import pglast
from pglast import ast
from pglast.parser import ParseError
from pydantic import AfterValidator


def _parse_one(text: str) -> ast.Node:
    try:
        parsed = pglast.parse_sql(text)
    except ParseError as exc:
        raise ValueError(f"does not parse: {exc.args[0]}") from exc
    if len(parsed) != 1 or parsed[0].stmt is None:
        raise ValueError("must be a single SQL statement (no ';')")
    return parsed[0].stmt


def _assignments(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    node = _parse_one(f"UPDATE _expand_backfill SET {value}")
    if not isinstance(node, ast.UpdateStmt) or node.whereClause or node.fromClause or node.returningClause:
        raise ValueError(
            f"{value!r} must be assignments only, such as 'name = title'; put the condition in 'where'"
        )
    return value


def _predicate(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    node = _parse_one(f"SELECT 1 WHERE {value}")
    extra = isinstance(node, ast.SelectStmt) and any(
        getattr(node, clause) for clause in ("groupClause", "havingClause", "sortClause", "limitCount")
    )
    if not isinstance(node, ast.SelectStmt) or extra or node.whereClause is None:
        raise ValueError(f"{value!r} must be a boolean condition only, such as 'name IS NULL'")
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
