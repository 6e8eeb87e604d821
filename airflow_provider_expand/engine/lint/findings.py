"""What the linter reports (a :class:`Finding`) and what it checks (a :class:`Rule`): each rule has a code,
a name, the phases it applies to and the safe alternative that every finding of it prints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from airflow_provider_expand.engine.lint.context import FileContext
    from airflow_provider_expand.engine.statements import Statement

Phase = Literal["expand", "contract", "rollback"]
PHASES: tuple[Phase, ...] = ("expand", "contract", "rollback")
ALL_PHASES: frozenset[Phase] = frozenset(PHASES)

Check = Callable[["Statement", "FileContext"], Iterable[str]]
"""Yields one message per problem found in a statement (the context holds what came before it)."""


@dataclass(frozen=True, order=True)
class Finding:
    """One problem at one line: ``file:line: CODE message — safe alternative``."""

    file: str
    line: int
    code: str
    message: str
    alternative: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.code} {self.message} — {self.alternative}"


@dataclass(frozen=True)
class Rule:
    """A lint rule. ``check`` is None for the rules the linter applies itself (syntax, suppressions)."""

    code: str
    name: str
    alternative: str
    check: Check | None = None
    phases: frozenset[Phase] = ALL_PHASES

    def finding(self, file: str, line: int, message: str) -> Finding:
        return Finding(file=file, line=line, code=self.code, message=message, alternative=self.alternative)
