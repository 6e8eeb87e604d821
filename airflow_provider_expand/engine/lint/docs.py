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
        anchor = rule.code.lower()
        rows.append(
            f"| [{rule.code}](#{anchor}) | `{rule.name}` | {phases_of(rule)} | {rule.severity} | {squawk} |"
        )
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
    for paragraph in _paragraphs(rule.explanation, None):
        lines += [paragraph, ""]
    lines += [f"**Safe alternative:** {rule.alternative}", ""]
    if rule.squawk:
        lines += [f"Covers squawk's {', '.join(f'`{s}`' for s in rule.squawk)}.", ""]
    return lines


_INTRO = f"""\
# Lint rules

Generated from the rules' metadata (`airflow_provider_expand/engine/lint/`) by
`python -m airflow_provider_expand.engine.lint.docs > docs/lint.md`; a test fails when they differ.

`airflow-expand lint PATH...` checks every statement of a migration's SQL against its phase (expand,
contract, rollback); the DAG's first task, `lint`, runs the same checks with the same settings.

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
| `--conn-id CONN` | read table sizes and existing tables from the target database (an Airflow connection): "rewrites 40 GB" instead of "rewrites the table", and a table is known to exist rather than assumed; without it lint never connects |

Exit codes: **0** clean (or warnings only, without `--strict`), **1** findings, **2** usage: a bad path,
spec, `{CONFIG_FILE}`, format, rule code or connection.

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

## Allowing one statement

`-- expand: allow CODE because <reason>` on the statement's line or the line above it allows that rule
for that statement. A suppression without a reason does not count (`EX002`); one naming an unknown
code is itself a finding (`EX003`).

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
