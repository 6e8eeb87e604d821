"""The findings as each reader wants them: ``text`` for people, ``json`` for scripts, ``github`` for
workflow annotations on the pull request, ``sarif`` for code scanning (:mod:`.sarif`). One function per
format, all from the same :class:`Finding` list, so no format can know more than another.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from airflow_provider_expand.engine.lint.findings import Finding
from airflow_provider_expand.engine.lint.linter import RULES_BY_CODE
from airflow_provider_expand.engine.lint.sarif import sarif_log

FORMATS = ("text", "json", "sarif", "github")


def render_text(findings: Sequence[Finding]) -> str:
    """``file:line: CODE message — safe alternative``, one a line (warnings marked)."""
    return "".join(f"{finding}\n" for finding in findings)


def render_json(findings: Sequence[Finding]) -> str:
    """One JSON document: every finding with its rule's name, and the counts by severity."""
    items = [
        {
            "file": f.file,
            "line": f.line,
            "code": f.code,
            "rule": RULES_BY_CODE[f.code].name if f.code in RULES_BY_CODE else None,
            "severity": f.severity,
            "message": f.message,
            "alternative": f.alternative,
        }
        for f in findings
    ]
    counts = {"error": sum(f.severity == "error" for f in findings)}
    counts["warning"] = len(findings) - counts["error"]
    return json.dumps({"findings": items, "counts": counts}, indent=2, ensure_ascii=False) + "\n"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def render_github(findings: Sequence[Finding]) -> str:
    """GitHub Actions workflow commands: ``::error file=F,line=N,title=CODE name::message — alternative``."""
    lines = []
    for f in findings:
        rule = RULES_BY_CODE.get(f.code)
        title = f"{f.code} {rule.name}" if rule else f.code
        props = [f"file={_escape_property(f.file)}"]
        if f.line > 0:
            props.append(f"line={f.line}")
        props.append(f"title={_escape_property(title)}")
        lines.append(f"::{f.severity} {','.join(props)}::{_escape_data(f'{f.message} — {f.alternative}')}\n")
    return "".join(lines)


def render_sarif(findings: Sequence[Finding]) -> str:
    return json.dumps(sarif_log(findings), indent=2, ensure_ascii=False) + "\n"


RENDERERS: dict[str, Callable[[Sequence[Finding]], str]] = {
    "text": render_text,
    "json": render_json,
    "sarif": render_sarif,
    "github": render_github,
}


def render(findings: Sequence[Finding], fmt: str) -> str:
    """The findings in format ``fmt`` (one of :data:`FORMATS`)."""
    return RENDERERS[fmt](findings)
