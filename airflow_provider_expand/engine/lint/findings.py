"""What the linter reports (a :class:`Finding`) and what it checks (a :class:`Rule`): each rule has a code,
a name, the phases it applies to and the safe alternative that every finding of it prints; its severity,
explanation and the squawk rules it covers feed ``--explain``, the output formats and ``docs/lint.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from airflow_provider_expand.engine.lint.context import FileContext
    from airflow_provider_expand.engine.statements import Statement

Phase = Literal["expand", "contract", "rollback"]
PHASES: tuple[Phase, ...] = ("expand", "contract", "rollback")
ALL_PHASES: frozenset[Phase] = frozenset(PHASES)

Severity = Literal["error", "warning"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning")
"""An error fails the lint (exit 1, the DAG's lint task); a warning is printed and fails only ``--strict``."""

Cost = Literal["", "rewrite", "scan"]
"""What a statement flagged by the rule costs in proportion to its table: with a live schema
(``--conn-id``) the finding says how much, e.g. "rewrites 40 GB"; "" when size is beside the point."""

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
    severity: Severity = "error"

    def __str__(self) -> str:
        mark = " (warning)" if self.severity == "warning" else ""
        return f"{self.file}:{self.line}: {self.code}{mark} {self.message} — {self.alternative}"

    def with_severity(self, severity: Severity) -> Finding:
        """The same finding at another severity (``lint.toml`` overrides a rule's default)."""
        return self if severity == self.severity else replace(self, severity=severity)


@dataclass(frozen=True)
class Rule:
    """A lint rule. ``check`` is None for the rules the linter applies itself (syntax, suppressions).

    ``severity`` is the default (``lint.toml`` may change it); ``explanation`` is the longer why, for
    ``--explain`` and ``docs/lint.md`` (a paragraph of plain text; blank lines separate paragraphs);
    ``squawk`` names the squawk rules (e.g. ``"require-concurrent-index-creation"``) this rule covers;
    ``cost`` says whether its statements rewrite or scan the table (see :data:`Cost`).
    """

    code: str
    name: str
    alternative: str
    check: Check | None = None
    phases: frozenset[Phase] = ALL_PHASES
    severity: Severity = "error"
    explanation: str = ""
    squawk: tuple[str, ...] = ()
    cost: Cost = ""

    def finding(self, file: str, line: int, message: str) -> Finding:
        return Finding(
            file=file,
            line=line,
            code=self.code,
            message=message,
            alternative=self.alternative,
            severity=self.severity,
        )
