"""Runs every rule over a phase's SQL, statement by statement, in file order (so a rule can know what
earlier statements created), and applies the ``-- expand: allow`` suppressions.
"""

from __future__ import annotations

from collections.abc import Sequence
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
from airflow_provider_expand.engine.lint.context import FileContext, ObjectKey
from airflow_provider_expand.engine.lint.findings import Finding, Phase, Rule
from airflow_provider_expand.engine.lint.suppressions import find_suppressions, target_of
from airflow_provider_expand.engine.statements import SQLFileError, parse_statements

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


def lint_sql(text: str, source: str = "<sql>", phase: Phase = "expand") -> list[Finding]:
    """Every finding in ``text``, the SQL of ``phase``; ``source`` names it in the findings."""
    findings, _ = _lint(text, FileContext(phase=phase, source=source))
    return findings


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
            findings.extend(
                rule.finding(source, statement.line, message) for message in rule.check(statement, ctx)
            )
        ctx.observe(statement)
    return sorted(findings), ctx


def lint_migration(spec: MigrationSpec) -> list[Finding]:
    """Lint every SQL file of a migration against its phase, carrying what expand did into the others:
    contract may validate a CHECK that expand added NOT VALID; rollback may drop what expand created."""
    findings: list[Finding] = []
    texts: list[tuple[Phase, str, str]] = []
    for phase, path in spec.sql_files().items():
        source = f"{spec.folder.name}/{path.relative_to(spec.folder).as_posix()}"
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            findings.append(SYNTAX.finding(source, 0, f"cannot be read: {exc}"))
            continue
        texts.append((phase, text, source))
    indexes = None if spec.migrator is not None else tuple(index.name for index in spec.indexes)
    return findings + lint_phases(texts, indexes=indexes)


def lint_phases(
    texts: Sequence[tuple[Phase, str, str]], *, indexes: Sequence[str] | None = ()
) -> list[Finding]:
    """Lint ``(phase, sql, source)`` in run order as one migration (the phase files, or the SQL the
    declarative operations generated): what expand did carries into contract and rollback. ``indexes`` are
    the migration's index builds (rollback may drop them); None when expand's SQL is not ours to read."""
    findings: list[Finding] = []
    expand_ctx: FileContext | None = None
    for phase, text, source in texts:
        if expand_ctx is not None:
            ctx = expand_ctx.carried_into(phase, source)
        else:
            ctx = FileContext(phase=phase, source=source)
        if phase == "rollback":
            ctx.expand_created = _expand_created(indexes, expand_ctx)
        file_findings, ctx = _lint(text, ctx)
        findings.extend(file_findings)
        if phase == "expand":
            expand_ctx = ctx
    return findings


def _expand_created(
    indexes: Sequence[str] | None, expand_ctx: FileContext | None
) -> frozenset[ObjectKey] | None:
    """What rollback may drop: what expand created plus the migration's index builds; None when expand is
    the app's own migrator (its SQL is not ours to read)."""
    if indexes is None:
        return None
    created: set[ObjectKey] = set(expand_ctx.created) if expand_ctx is not None else set()
    created.update(("index", name) for name in indexes)
    return frozenset(created)
