"""``--explain CODE`` and ``docs/lint.md``, both written from the rules' own metadata (code, name,
phases, severity, explanation, safe alternative, the squawk rules covered), so neither can drift from
the linter: ``python -m airflow_provider_expand.engine.lint.docs > docs/lint.md``; a test compares them.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from airflow_provider_expand.engine.lint.config import CONFIG_FILE
from airflow_provider_expand.engine.lint.findings import PHASES, Rule
from airflow_provider_expand.engine.lint.linter import RULES


def phases_of(rule: Rule) -> str:
    """``all phases`` or the phases the rule applies to, in runbook order."""
    if len(rule.phases) == len(PHASES):
        return "all phases"
    return ", ".join(p for p in PHASES if p in rule.phases)


def _paragraphs(text: str, width: int | None) -> list[str]:
    paragraphs = [" ".join(p.split()) for p in text.strip().split("\n\n") if p.strip()]
    if width is None:
        return paragraphs
    return [textwrap.fill(p, width) for p in paragraphs]


def explain(rule: Rule) -> str:
    """What ``airflow-expand lint --explain CODE`` prints: the rule, why, and what to do instead."""
    lines = [f"{rule.code} {rule.name} ({rule.severity}; {phases_of(rule)})", ""]
    for paragraph in _paragraphs(rule.explanation, 100):
        lines += [paragraph, ""]
    lines += [*textwrap.wrap(f"Safe alternative: {rule.alternative}", 100), ""]
    if rule.squawk:
        lines += [f"Covers squawk: {', '.join(rule.squawk)}", ""]
    lines.append(f"Allow one statement: -- expand: allow {rule.code} because <reason>")
    return "\n".join(lines) + "\n"


def _table(rules: Sequence[Rule]) -> list[str]:
    rows = ["| code | name | phases | severity | squawk |", "|---|---|---|---|---|"]
    for rule in rules:
        squawk = ", ".join(f"`{s}`" for s in rule.squawk) or "-"
        rows.append(f"| {rule.code} | `{rule.name}` | {phases_of(rule)} | {rule.severity} | {squawk} |")
    return rows


def _squawk_table(rules: Sequence[Rule]) -> list[str]:
    covered: dict[str, list[str]] = {}
    for rule in rules:
        for name in rule.squawk:
            covered.setdefault(name, []).append(rule.code)
    if not covered:
        return ["No rule names a squawk rule yet."]
    rows = ["| squawk rule | covered by |", "|---|---|"]
    rows += [f"| `{name}` | {', '.join(codes)} |" for name, codes in sorted(covered.items())]
    return rows


def _section(rule: Rule) -> list[str]:
    lines = [f"### {rule.code}", "", f"`{rule.name}` · {phases_of(rule)} · {rule.severity}", ""]
    for paragraph in _paragraphs(rule.explanation, 110):
        lines += [paragraph, ""]
    lines += [f"**Safe alternative:** {rule.alternative}", ""]
    if rule.squawk:
        lines += [f"Covers squawk's {', '.join(f'`{s}`' for s in rule.squawk)}.", ""]
    return lines


_INTRO = f"""\
# Lint rules

Generated from the rules' metadata (`airflow_provider_expand/engine/lint/`) by
`python -m airflow_provider_expand.engine.lint.docs > docs/lint.md`; a test fails when they differ.

`airflow-expand lint PATH...` (and every DAG's first task, `lint`, with the same settings) parses each SQL
file with pglast — PostgreSQL's own parser, never regexes — and checks every statement against its phase
(`expand.sql`, `contract.sql`, `rollback.sql`). A finding reads `file:line: CODE message — safe alternative`.

## Running it

| option | what it does |
|---|---|
| `--format text` | `file:line: CODE message — safe alternative`, one a line (the default) |
| `--format json` | one JSON document: `findings` (file, line, code, rule, severity, message, alternative) and `counts` |
| `--format sarif` | SARIF 2.1.0 for code scanning (e.g. `github/codeql-action/upload-sarif`) |
| `--format github` | GitHub Actions workflow commands (`::error file=...,line=...::...`): annotations on the pull request |
| `--explain CODE` | the rule's explanation and safe alternative |
| `--rules` | every rule with its code and phases |
| `--strict` | warnings fail too |
| `--migrations-only` | skip SQL files outside every migration folder (the pre-commit hooks pass it) |
| `--conn-id CONN` | read table sizes and existing tables from the target database (an Airflow connection): "rewrites 40 GB" instead of "rewrites the table", and a table is known to exist rather than assumed; without it lint never connects |

Exit codes: **0** clean (or warnings only, without `--strict`), **1** findings, **2** usage: a bad path,
spec, `{CONFIG_FILE}`, format, rule code or connection.

With `--conn-id`, lint reads the catalog of the target database (read-only, one query per table):
a finding of a rule that rewrites or scans a table ends with, e.g., `; rewrites 40 GB (products,
~12,000,000 rows)` (a rewrite counts indexes and TOAST, a scan the table alone; partitions are summed),
and a table that expand touches but the database does not have is known to be new, as if created in
the file. The connection's credentials stay in Airflow's store (an `AIRFLOW_CONN_...` variable, a
secrets backend or the metadata database).

## In CI and pre-commit

```yaml
# .pre-commit-config.yaml of the repository holding the migrations
repos:
  - repo: <the airflow-provider-expand repository>
    rev: <a tag>
    hooks:
      - id: airflow-expand-lint           # installs airflow-provider-expand in its own environment
      # - id: airflow-expand-lint-system  # or: the airflow-expand your environment has (your DAGs' version)
```

A changed `.sql` file of a migration folder lints the whole migration, so rollback knows what expand
created. In a GitHub Actions job, `airflow-expand lint dags/migrations --format github` annotates the
pull request; `--format sarif > lint.sarif` feeds `github/codeql-action/upload-sarif`.

## Settings: `{CONFIG_FILE}`

At the root of the migrations folder (the nearest `{CONFIG_FILE}` in a migration's folder or above it,
up to the repository root), read by the CLI and by the DAG's lint task alike:

```toml
disable = ["EX503"]     # never reported
[severity]
EX504 = "warning"       # reported, but fails only `--strict`; the DAG's lint task logs it and goes on
```

An unknown key, rule code or severity is refused (exit 2, naming the file and key). `EX001` (SQL that
does not parse) can be neither disabled nor made a warning: such a file was not checked at all.

## Allowing a statement

When a finding is safe in your case (a table created in the same expand, a tiny lookup table), say so on
the statement's line or the line above it; a suppression without a reason does not count and is itself
a finding (`EX002`), one naming an unknown code too (`EX003`):

```sql
-- expand: allow EX201 because shop_settings holds one row per shop (20 rows)
CREATE INDEX shop_settings_shop_idx ON shop_settings (shop_id);
```

## Rules

"""


def lint_doc(rules: Sequence[Rule] = RULES) -> str:
    """docs/lint.md as it must read."""
    lines = [*_table(rules), "", "## squawk's rules and the codes that cover them", ""]
    lines += [*_squawk_table(rules), "", "## Every rule", ""]
    for rule in rules:
        lines += _section(rule)
    return _INTRO + "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    print(lint_doc(), end="")
