"""``lint.toml`` at the root of the migrations folder: rule severities and disabled rules, read by one
loader for the CLI and the DAG's lint task alike, so a migration lints the same way in both.

    # dags/migrations/lint.toml
    disable = ["EX503"]          # never reported
    [severity]
    EX504 = "warning"            # reported; fails only `lint --strict`

The nearest ``lint.toml`` in a migration's folder or above it applies (the search stops at a folder
holding ``.git``). An unknown key or rule code is an error naming the file and the key.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from airflow_provider_expand.engine.errors import DefinitiveError
from airflow_provider_expand.engine.lint.findings import SEVERITIES, Finding, Severity

CONFIG_FILE = "lint.toml"
UNDISABLEABLE = frozenset({"EX001"})
"""A file that does not parse was not checked at all: its finding cannot be turned off or down."""


class LintConfigError(DefinitiveError):
    """A ``lint.toml`` that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class LintConfig:
    """The settings of one ``lint.toml`` (``path`` None: no file, every rule at its default)."""

    path: Path | None = None
    disabled: frozenset[str] = frozenset()
    severities: dict[str, Severity] = field(default_factory=dict)

    def apply(self, findings: Iterable[Finding]) -> list[Finding]:
        """Findings of disabled rules left out, the others at the configured severity."""
        return [
            finding.with_severity(self.severities.get(finding.code, finding.severity))
            for finding in findings
            if finding.code not in self.disabled
        ]


def find_config(start: Path) -> Path | None:
    """The nearest ``lint.toml`` at ``start`` (a folder, or a file's folder) or above it, or None."""
    folder = start.resolve()
    if not folder.is_dir():
        folder = folder.parent
    for candidate in (folder, *folder.parents):
        path = candidate / CONFIG_FILE
        if path.is_file():
            return path
        if (candidate / ".git").exists():
            return None
    return None


def config_for(start: Path, known_codes: Iterable[str]) -> LintConfig:
    """The settings that apply to a migration folder or SQL file: :func:`find_config`, then :func:`load_config`."""
    path = find_config(start)
    return load_config(path, known_codes) if path is not None else LintConfig()


def load_config(path: Path, known_codes: Iterable[str]) -> LintConfig:
    """Read and check one ``lint.toml``; every problem is a :class:`LintConfigError` naming file and key."""
    known = frozenset(known_codes)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise LintConfigError(f"{path}: cannot be read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise LintConfigError(f"{path}: not valid TOML: {exc}") from exc
    problems: list[str] = []
    for key in sorted(set(raw) - {"disable", "severity"}):
        problems.append(f"{path}: {key}: unknown key (known: disable, severity)")

    disabled: set[str] = set()
    listed = raw.get("disable", [])
    if not isinstance(listed, list) or not all(isinstance(c, str) for c in listed):
        problems.append(f'{path}: disable: must be a list of rule codes, e.g. disable = ["EX503"]')
        listed = []
    for code in listed:
        if code.upper() not in known:
            problems.append(f"{path}: disable: unknown rule code {code} (see `airflow-expand lint --rules`)")
        elif code.upper() in UNDISABLEABLE:
            problems.append(
                f"{path}: disable: {code} cannot be disabled (a file that does not parse is unchecked)"
            )
        else:
            disabled.add(code.upper())

    severities: dict[str, Severity] = {}
    table = raw.get("severity", {})
    if not isinstance(table, dict):
        problems.append(f'{path}: severity: must be a table, e.g. [severity] EX504 = "warning"')
        table = {}
    for code, value in table.items():
        where = f"{path}: severity.{code}"
        if code.upper() not in known:
            problems.append(f"{where}: unknown rule code {code} (see `airflow-expand lint --rules`)")
        elif value not in SEVERITIES:
            problems.append(f"{where}: must be one of {', '.join(map(repr, SEVERITIES))}, not {value!r}")
        elif code.upper() in UNDISABLEABLE and value != "error":
            problems.append(f"{where}: {code} stays an error (a file that does not parse is unchecked)")
        else:
            severities[code.upper()] = value
    if problems:
        raise LintConfigError("\n".join(problems))
    return LintConfig(path=path, disabled=frozenset(disabled), severities=severities)
