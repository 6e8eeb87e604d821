"""SARIF 2.1.0 (the OASIS Static Analysis Results Interchange Format) for code scanning: one run of the
tool ``airflow-expand lint`` with every rule's metadata, and one result per finding at its file and line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any
from urllib.parse import quote

from airflow_provider_expand import __version__
from airflow_provider_expand.engine.lint.findings import PHASES, Finding, Rule
from airflow_provider_expand.engine.lint.linter import RULES

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"


def _rule(rule: Rule) -> dict[str, Any]:
    phases = [p for p in PHASES if p in rule.phases]
    described: dict[str, Any] = {
        "id": rule.code,
        "name": rule.name,
        "shortDescription": {"text": rule.name.replace("-", " ")},
        "help": {"text": f"Safe alternative: {rule.alternative}"},
        "defaultConfiguration": {"level": rule.severity},
        "properties": {"phases": phases, "tags": ["migration", "postgresql", *phases]},
    }
    if rule.explanation:
        described["fullDescription"] = {"text": " ".join(rule.explanation.split())}
    if rule.squawk:
        described["properties"]["squawk"] = list(rule.squawk)
    return described


def artifact_uri(path: str) -> str:
    """A file path as a SARIF artifact URI: relative paths stay relative (to the repository root, where
    code scanning resolves them), absolute ones become ``file://`` URIs."""
    posix = PureWindowsPath(path).as_posix() if "\\" in path else path
    if PurePosixPath(posix).is_absolute():
        return "file://" + quote(posix)
    return quote(posix.removeprefix("./"))


def _result(finding: Finding, index: dict[str, int]) -> dict[str, Any]:
    location: dict[str, Any] = {"artifactLocation": {"uri": artifact_uri(finding.file)}}
    if finding.line > 0:
        location["region"] = {"startLine": finding.line}
    result: dict[str, Any] = {
        "ruleId": finding.code,
        "level": finding.severity,
        "message": {"text": f"{finding.message} — {finding.alternative}"},
        "locations": [{"physicalLocation": location}],
    }
    if finding.code in index:
        result["ruleIndex"] = index[finding.code]
    return result


def sarif_log(findings: Sequence[Finding], rules: Sequence[Rule] = RULES) -> dict[str, Any]:
    """The SARIF log (a JSON-ready dict) of one lint run."""
    index = {rule.code: i for i, rule in enumerate(rules)}
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "airflow-expand lint",
                        "version": __version__,
                        "rules": [_rule(rule) for rule in rules],
                    }
                },
                "columnKind": "unicodeCodePoints",
                "results": [_result(f, index) for f in findings],
            }
        ],
    }
