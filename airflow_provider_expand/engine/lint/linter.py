"""Runs every rule over a phase's SQL, statement by statement, in file order (so a rule can know what
earlier statements created), and applies the ``-- expand: allow`` suppressions.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from airflow_provider_expand.engine.lint import (
    columns,
    constraints,
    data,
    destructive,
    indexes,
    locking,
    session,
    transactions,
)
from airflow_provider_expand.engine.lint.config import LintConfig, config_for
from airflow_provider_expand.engine.lint.context import FileContext, ObjectKey
from airflow_provider_expand.engine.lint.findings import Finding, Phase, Rule
from airflow_provider_expand.engine.lint.live import LiveSchema, statement_tables
from airflow_provider_expand.engine.lint.suppressions import find_suppressions, target_of
from airflow_provider_expand.engine.statements import SQLFileError, Statement, parse_statements

if TYPE_CHECKING:
    from airflow_provider_expand.spec import MigrationSpec

SYNTAX = Rule(
    "EX001",
    "syntax",
    "fix the SQL; files are read with PostgreSQL's own parser, exactly as the server will read them",
)
NO_REASON = Rule(
    "EX002",
    "suppression-without-reason",
    "say why it is safe here: -- expand: allow CODE because <reason>",
)
BAD_SUPPRESSION = Rule(
    "EX003",
    "bad-suppression",
    "write -- expand: allow CODE because <reason>, with a code from `airflow-expand lint --rules`, "
    "on the line above the statement",
)

CHECKED_RULES: tuple[Rule, ...] = (
    *destructive.RULES,
    *indexes.RULES,
    *columns.RULES,
    *constraints.RULES,
    *locking.RULES,
    *data.RULES,
    *transactions.RULES,
    *session.RULES,
)
RULES: tuple[Rule, ...] = (SYNTAX, NO_REASON, BAD_SUPPRESSION, *CHECKED_RULES)
RULES_BY_CODE: dict[str, Rule] = {rule.code: rule for rule in RULES}


def lint_sql(
    text: str,
    source: str = "<sql>",
    phase: Phase = "expand",
    *,
    live: LiveSchema | None = None,
    config: LintConfig | None = None,
) -> list[Finding]:
    """Every finding in ``text``, the SQL of ``phase``; ``source`` names it in the findings. ``live``
    (the target database) adds table sizes; ``config`` (a ``lint.toml``) disables rules or changes
    their severity."""
    findings, _ = _lint(text, FileContext(phase=phase, source=source, live=live))
    return config.apply(findings) if config is not None else findings


def config_near(path: Path) -> LintConfig:
    """The ``lint.toml`` settings for a migration folder or SQL file (the nearest one at or above it)."""
    return config_for(path, RULES_BY_CODE)


def _cost(rule: Rule, statement: Statement, ctx: FileContext) -> str:
    """``; rewrites 40 GB (products, ~12,000,000 rows)`` with a live schema, else ""."""
    if ctx.live is None or not rule.cost:
        return ""
    sizes = [size for rel in statement_tables(statement.node) if (size := ctx.live.table(rel)) is not None]
    return "".join(f"; {size.cost(rule.cost)}" for size in sizes)


def _lint(text: str, ctx: FileContext) -> tuple[list[Finding], FileContext]:
    source = ctx.source
    try:
        statements = parse_statements(text, source=source)
    except SQLFileError as exc:
        return [SYNTAX.finding(source, exc.line, exc.message)], ctx
    findings: list[Finding] = []
    allowed: dict[int, set[str]] = {}
    for suppression in find_suppressions(text):
        if not suppression.well_formed:
            findings.append(
                BAD_SUPPRESSION.finding(source, suppression.line, "malformed suppression comment")
            )
            continue
        unknown = [c for c in suppression.codes if c not in RULES_BY_CODE]
        if unknown:
            findings.append(
                BAD_SUPPRESSION.finding(
                    source, suppression.line, f"suppression names unknown rule {', '.join(unknown)}"
                )
            )
        if not suppression.reason:
            codes = ", ".join(suppression.codes)
            findings.append(
                NO_REASON.finding(source, suppression.line, f"suppression of {codes} gives no reason")
            )
            continue
        targets = target_of(suppression, statements)
        if not targets:
            findings.append(
                BAD_SUPPRESSION.finding(source, suppression.line, "suppression has no statement after it")
            )
        for index in targets:
            allowed.setdefault(index, set()).update(suppression.codes)
    for index, statement in enumerate(statements):
        for rule in CHECKED_RULES:
            if ctx.phase not in rule.phases or rule.check is None or rule.code in allowed.get(index, ()):
                continue
            messages = list(rule.check(statement, ctx))
            cost = _cost(rule, statement, ctx) if messages else ""
            findings.extend(rule.finding(source, statement.line, message + cost) for message in messages)
        ctx.observe(statement)
    return sorted(findings), ctx


def lint_migration(
    spec: MigrationSpec, *, live: LiveSchema | None = None, config: LintConfig | None = None
) -> list[Finding]:
    """Lint every SQL file of a migration against its phase, carrying what expand did into the others:
    contract may validate a CHECK that expand added NOT VALID; rollback may drop what expand created.

    The settings are the ``lint.toml`` nearest the folder unless ``config`` is given (the CLI and the
    DAG's lint task both come here, so they read the same file); ``live`` adds table sizes."""
    if config is None:
        config = config_near(spec.folder)
    findings: list[Finding] = []
    expand_ctx: FileContext | None = None
    for phase, path in spec.sql_files().items():
        source = f"{spec.folder.name}/{path.relative_to(spec.folder).as_posix()}"
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            findings.append(SYNTAX.finding(source, 0, f"cannot be read: {exc}"))
            continue
        if expand_ctx is not None:
            ctx = expand_ctx.carried_into(phase, source)
        else:
            ctx = FileContext(phase=phase, source=source, live=live)
        if phase == "rollback":
            ctx.expand_created = _expand_created(spec, expand_ctx)
        file_findings, ctx = _lint(text, ctx)
        findings.extend(file_findings)
        if phase == "expand":
            expand_ctx = ctx
    return config.apply(findings)


def _expand_created(spec: MigrationSpec, expand_ctx: FileContext | None) -> frozenset[ObjectKey] | None:
    """What rollback may drop: what expand.sql created plus the spec's indexes; None when expand is the
    app's own migrator (its SQL is not ours to read)."""
    if spec.migrator is not None:
        return None
    created: set[ObjectKey] = set(expand_ctx.created) if expand_ctx is not None else set()
    created.update(("index", index.name) for index in spec.indexes)
    return frozenset(created)
