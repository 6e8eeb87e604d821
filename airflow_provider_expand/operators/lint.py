"""``LintOperator``: the DAG's first task, so a dangerous statement fails the run before the database is touched."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator, Context

from airflow_provider_expand.engine.errors import DefinitiveError
from airflow_provider_expand.engine.lint import lint_migration
from airflow_provider_expand.retries import ClassifiedErrors
from airflow_provider_expand.spec import load_migration


class LintFindingsError(DefinitiveError):
    """The migration has findings; the message lists each as ``file:line: CODE message — alternative``."""


class LintOperator(ClassifiedErrors, BaseOperator):
    """Loads the migration folder (spec errors fail here too) and lints every SQL file against its phase,
    with the settings of the ``lint.toml`` nearest the folder (as the CLI does): errors fail the task,
    warnings are logged."""

    template_fields: Sequence[str] = ()
    ui_color = "#f3e8fd"

    def __init__(self, *, folder: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.folder = folder

    def execute(self, context: Context) -> int:
        spec = load_migration(Path(self.folder))
        findings = lint_migration(spec)
        errors = [f for f in findings if f.severity == "error"]
        for finding in findings:
            (self.log.error if finding.severity == "error" else self.log.warning)("%s", finding)
        if errors:
            listing = "\n".join(f"  {f}" for f in errors)
            raise LintFindingsError(
                f"{len(errors)} lint finding(s) in {spec.folder.name}; fix them or allow one with "
                f"'-- expand: allow CODE because <reason>':\n{listing}"
            )
        warnings = f", {len(findings)} warning(s)" if findings else ""
        self.log.info("%s lints clean (%d SQL files%s)", spec.id, len(spec.sql_files()), warnings)
        return 0
