"""Runs every rule over a phase's SQL, statement by statement, in file order (so a rule can know what
earlier statements created), and applies the ``-- expand: allow`` suppressions. For a whole migration it
carries what expand did into contract and rollback, and compares rollback with expand at the end.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_expand.engine.lint import (
    columns,
    compatibility,
    constraints,
    custom_types,
    data,
    datatypes,
    destructive,
    indexes,
    locking,
    names,
    rollback,
    session,
    transactions,
)
from airflow_provider_expand.engine.lint.config import LintConfig, config_for
from airflow_provider_expand.engine.lint.context import FileContext, ObjectKey
from airflow_provider_expand.engine.lint.findings import Finding, Phase, Rule
from airflow_provider_expand.engine.lint.live import LiveSchema, statement_tables
from airflow_provider_expand.engine.lint.operations import (
    RAW_SQL_WITHOUT_DOWN,
    missing_down,
    raw_sql_operations,
)
from airflow_provider_expand.engine.lint.rollback import IndexStep, rollback_gaps
from airflow_provider_expand.engine.lint.suppressions import Suppression, find_suppressions, target_of
from airflow_provider_expand.engine.statements import (
    FragmentError,
    SQLFileError,
    Statement,
    parse_assignments,
    parse_statements,
    parse_table,
)

if TYPE_CHECKING:
    from airflow_provider_expand.spec import MigrationSpec

SYNTAX = Rule(
    code="EX001",
    name="syntax",
    alternative="fix the SQL; files are read with PostgreSQL's own parser, exactly as the server will read them",
    explanation=(
        "Every file is parsed by pglast, which is PostgreSQL's own parser: what does not parse here would "
        "fail on the server, midway through the migration. The line is the one the parser points at."
    ),
    squawk=("syntax-error",),
)
NO_REASON = Rule(
    code="EX002",
    name="suppression-without-reason",
    alternative="say why it is safe here: -- expand: allow CODE because <reason>",
    explanation="A suppression is a reviewed exception; without a reason it does not count.",
)
BAD_SUPPRESSION = Rule(
    code="EX003",
    name="bad-suppression",
    alternative="write -- expand: allow CODE because <reason>, with a code from `airflow-expand lint "
    "--rules`, on the line above the statement",
    explanation=(
        "A suppression comment that is malformed, names an unknown rule, or has no statement after it "
        "silences nothing, which is worth knowing."
    ),
)
UNUSED_SUPPRESSION = Rule(
    code="EX005",
    name="unused-suppression",
    alternative="remove the suppression, or name the code the statement does trip",
    severity="warning",
    explanation=(
        "A suppression that silences nothing (the statement was made safe, or the code is a typo) would "
        "silently allow the next unsafe edit of that statement."
    ),
    squawk=("unused-ignore",),
)

CHECKED_RULES: tuple[Rule, ...] = (
    *names.RULES,
    *destructive.RULES,
    *indexes.RULES,
    *columns.RULES,
    *datatypes.RULES,
    *custom_types.RULES,
    *constraints.RULES,
    *locking.RULES,
    *data.RULES,
    *transactions.RULES,
    *session.RULES,
    *compatibility.RULES,
    *rollback.RULES,
)
MIGRATION_RULES: tuple[Rule, ...] = (
    rollback.ROLLBACK_LEAVES_BEHIND,
    rollback.ROLLBACK_NOT_RECREATED,
    RAW_SQL_WITHOUT_DOWN,
)
"""Rules that compare a migration's parts (expand with rollback, an operation with its down)."""
RULES: tuple[Rule, ...] = tuple(
    sorted(
        (SYNTAX, NO_REASON, BAD_SUPPRESSION, UNUSED_SUPPRESSION, *CHECKED_RULES, *MIGRATION_RULES),
        key=lambda r: r.code,
    )
)
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
    whole = FileContext(phase=ctx.phase, source=source)
    for statement in statements:
        whole.observe(statement)
    ctx.file_appears = frozenset(whole.appeared)
    findings: list[Finding] = []
    allowed: dict[int, set[str]] = {}
    placed: list[tuple[Suppression, list[int]]] = []
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
            ctx.allowed_lines.setdefault(statements[index].line, set()).update(suppression.codes)
        placed.append((suppression, targets))
    used: set[tuple[int, str]] = set()
    for index, statement in enumerate(statements):
        for rule in CHECKED_RULES:
            if ctx.phase not in rule.phases or rule.check is None:
                continue
            messages = list(rule.check(statement, ctx))
            if rule.code in allowed.get(index, ()):
                used.update((index, rule.code) for _ in messages[:1])
                continue
            cost = _cost(rule, statement, ctx) if messages else ""
            findings.extend(rule.finding(source, statement.line, message + cost) for message in messages)
        ctx.observe(statement)
    findings.extend(_unused(placed, used, source))
    return sorted(findings), ctx


def _unused(
    placed: Sequence[tuple[Suppression, list[int]]], used: set[tuple[int, str]], source: str
) -> Iterator[Finding]:
    """EX005 for each code a suppression names that silenced nothing on its statement (rules that compare
    files are checked later, by :func:`lint_migration`, and are left out)."""
    later = {rule.code for rule in MIGRATION_RULES}
    for suppression, targets in placed:
        for code in suppression.codes if targets else ():
            if code in RULES_BY_CODE and code not in later and not any((i, code) in used for i in targets):
                yield UNUSED_SUPPRESSION.finding(
                    source,
                    suppression.line,
                    f"suppression of {code} silences nothing: the statement it applies to does not trip {code} "
                    "(any more), so the comment only hides a future finding",
                )


def lint_migration(
    spec: MigrationSpec, *, live: LiveSchema | None = None, config: LintConfig | None = None
) -> list[Finding]:
    """Lint every SQL file of a migration against its phase, carrying what expand did into the others:
    contract may validate a CHECK that expand added NOT VALID, and must keep what the new code reads;
    rollback may drop what expand created, and must undo all of it.

    The settings are the ``lint.toml`` nearest the folder unless ``config`` is given (the CLI and the
    DAG's lint task both come here, so they read the same file); ``live`` adds table sizes."""
    if config is None:
        config = config_near(spec.folder)
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
    findings.extend(lint_phases(texts, spec=spec, live=live))
    findings.extend(lint_operations(_operations(spec), f"{spec.folder.name}/migration.yaml"))
    return config.apply(sorted(findings))


def lint_phases(
    texts: Sequence[tuple[Phase, str, str]],
    *,
    indexes: Sequence[str] | None = (),
    spec: MigrationSpec | None = None,
    live: LiveSchema | None = None,
) -> list[Finding]:
    """Lint ``(phase, sql, source)`` in run order as one migration (the phase files, or the SQL the
    declarative operations generated): what expand did carries into contract and rollback. ``indexes`` are
    the migration's index builds (rollback may drop them); None when expand's SQL is not ours to read.
    ``spec``, for phase files, adds what the new code reads (contract) and what rollback must undo."""
    if spec is not None:
        indexes = None if spec.migrator is not None else tuple(index.name for index in spec.indexes)
    findings: list[Finding] = []
    expand_ctx: FileContext | None = None
    rollback_ctx: FileContext | None = None
    for phase, text, source in texts:
        if expand_ctx is not None:
            ctx = expand_ctx.carried_into(phase, source)
        else:
            ctx = FileContext(phase=phase, source=source, live=live)
        if phase == "rollback":
            ctx.expand_created = _expand_created(indexes, expand_ctx)
        elif phase == "contract" and spec is not None:
            ctx.new_code_reads = _new_code_reads(spec, expand_ctx)
        file_findings, ctx = _lint(text, ctx)
        findings.extend(file_findings)
        if phase == "expand":
            expand_ctx = ctx
        elif phase == "rollback":
            rollback_ctx = ctx
    if rollback_ctx is not None and spec is not None and spec.migrator is None:
        findings.extend(_rollback_findings(spec, expand_ctx, rollback_ctx))
    return sorted(findings)


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


def _bare(table: str) -> str:
    """``shop.products`` -> ``products``, as the parse trees name tables."""
    try:
        return parse_table(table)[1]
    except FragmentError:
        return table


def _new_code_reads(spec: MigrationSpec, expand_ctx: FileContext | None) -> dict[ObjectKey, str]:
    """What contract must not drop: what expand.sql created for the new code, what a backfill writes,
    what an index step builds (and the columns it is on)."""
    reads: dict[ObjectKey, str] = {}
    if expand_ctx is not None:
        for key, line in expand_ctx.origins.items():
            if key[0] in ("relation", "column", "index", "type"):
                reads[key] = f"{expand_ctx.source}:{line} created it"
    for backfill in spec.backfill:
        table = _bare(backfill.table)
        try:
            targets = [t.name for t in parse_assignments(backfill.set).targetList or () if t.name]
        except FragmentError:
            targets = []
        for column in targets:
            reads.setdefault(("column", f"{table}.{column}"), f"the backfill of {backfill.table} writes it")
    for index in spec.indexes:
        reads.setdefault(("index", index.name), "indexes: builds it for the new code")
        for column in index.columns:
            reads.setdefault(("column", f"{_bare(index.table)}.{column}"), f"indexes: {index.name} is on it")
    return reads


def _rollback_findings(
    spec: MigrationSpec, expand_ctx: FileContext | None, rollback_ctx: FileContext
) -> Iterator[Finding]:
    """EX903/EX904 at the expand statement (or indexes: entry) whose work rollback.sql does not undo."""
    expand = expand_ctx or FileContext(phase="expand", source="")
    steps = [IndexStep(i.name, _bare(i.table), i.columns) for i in spec.indexes]
    yaml_source = f"{spec.folder.name}/migration.yaml"
    for gap in rollback_gaps(expand, rollback_ctx, steps):
        if gap.line == 0:
            yield gap.rule.finding(yaml_source, _yaml_line(spec, gap.key[1]), gap.message)
        elif gap.rule.code not in expand.allowed_lines.get(gap.line, ()):
            yield gap.rule.finding(expand.source, gap.line, gap.message)


def _yaml_line(spec: MigrationSpec, name: str) -> int:
    """The line of migration.yaml that names ``name`` (1 when it cannot be found)."""
    try:
        lines = spec.source.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return 1
    return next((n for n, line in enumerate(lines, 1) if name in line), 1)


def _operations(spec: MigrationSpec) -> list[Mapping[str, Any]]:
    """The spec's ``operations:`` as plain dicts in pgroll's spelling (``sql: {up, down, onComplete}``)."""
    return [entry.model_dump(by_alias=True, exclude_none=True) for entry in spec.operations]


def lint_operations(operations: Sequence[Mapping[str, Any]], source: str = "migration.yaml") -> list[Finding]:
    """EX906 for raw SQL operations without ``down``, and every rule over their ``up`` (as expand, or as
    contract with ``onComplete``) and ``down`` (as rollback); findings name ``source#operations[i].sql.up``."""
    findings: list[Finding] = []
    for where, message in missing_down(operations):
        findings.append(RAW_SQL_WITHOUT_DOWN.finding(f"{source}#{where}", 1, message))
    for raw in raw_sql_operations(operations):
        for part, phase, text in (("up", raw.up_phase, raw.up), ("down", "rollback", raw.down)):
            if text.strip():
                found, _ = _lint(text, FileContext(phase=phase, source=f"{source}#{raw.where}.{part}"))
                findings.extend(found)
    return findings
