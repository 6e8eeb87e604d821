"""``-- expand: allow CODE because <reason>``: a reviewed exception to a rule, for one statement.

Comments are found with PostgreSQL's own scanner (pglast), so text inside strings and dollar-quoted
function bodies is never mistaken for one. A suppression applies to the statement on its line, or else to
the next statement below it; one without a reason does not count.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pglast.parser import scan

from airflow_provider_expand.engine.statements import Statement

_MARK = re.compile(r"^\s*expand:\s*allow\b", re.IGNORECASE)
_SUPPRESSION = re.compile(
    r"^\s*expand:\s*allow\s+(?P<codes>[A-Z]+[0-9]+(?:\s*,\s*[A-Z]+[0-9]+)*)"
    r"(?:\s+because\b(?P<reason>.*))?\s*$",
    re.IGNORECASE | re.DOTALL,
)


@dataclass(frozen=True)
class Suppression:
    """One ``expand: allow`` comment: where it is, what it allows and why (``reason`` may be empty)."""

    line: int
    end_line: int
    codes: tuple[str, ...]
    reason: str
    well_formed: bool = True


def _comment_body(text: str) -> str:
    if text.startswith("--"):
        return text[2:]
    if text.startswith("/*"):
        return text[2:].removesuffix("*/")
    return text


def find_suppressions(text: str) -> list[Suppression]:
    """Every comment in ``text`` that starts with ``expand: allow`` (malformed ones included)."""
    found = []
    for token in scan(text):
        if token.name not in ("SQL_COMMENT", "C_COMMENT"):
            continue
        raw = text[token.start : token.end + 1]
        body = _comment_body(raw)
        if not _MARK.match(body):
            continue
        line = text.count("\n", 0, token.start) + 1
        end_line = line + raw.rstrip("\n").count("\n")
        match = _SUPPRESSION.match(body)
        if match is None:
            found.append(Suppression(line, end_line, (), "", well_formed=False))
            continue
        codes = tuple(c.strip().upper() for c in match["codes"].split(","))
        reason = " ".join((match["reason"] or "").split())
        found.append(Suppression(line, end_line, codes, reason))
    return found


def statement_lines(statement: Statement) -> tuple[int, int]:
    """First and last line of a statement's own text."""
    return statement.line, statement.line + statement.sql.count("\n")


def target_of(suppression: Suppression, statements: Sequence[Statement]) -> list[int]:
    """Indexes of the statements a suppression applies to: those on its line, else the next one."""
    on_line = [
        i
        for i, s in enumerate(statements)
        if statement_lines(s)[0] <= suppression.line <= statement_lines(s)[1]
    ]
    if on_line:
        return on_line
    following = [i for i, s in enumerate(statements) if s.line > suppression.end_line]
    return following[:1]
