"""The phase-aware linter (DESIGN.md, 'Lint'): every statement of a migration's SQL checked against its
phase, each finding with a code and a safe alternative. One module per rule family.

``lint_sql(text, source, phase)`` for one file, ``lint_migration(spec)`` for a whole folder.
"""

from airflow_provider_expand.engine.lint.findings import PHASES, SEVERITIES, Finding, Phase, Rule, Severity
from airflow_provider_expand.engine.lint.linter import RULES, RULES_BY_CODE, lint_migration, lint_sql

__all__ = [
    "PHASES",
    "RULES",
    "RULES_BY_CODE",
    "SEVERITIES",
    "Finding",
    "Phase",
    "Rule",
    "Severity",
    "lint_migration",
    "lint_sql",
]
