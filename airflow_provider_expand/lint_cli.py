"""``airflow-expand lint``: the linter as a CI gate. Formats for people and for CI tools, ``--explain``,
the ``lint.toml`` settings (the same loader the DAG's lint task uses) and, with ``--conn-id``, table
sizes from the target database. No Airflow import unless ``--conn-id`` is given.

Exit codes: 0 clean (warnings alone too, unless ``--strict``), 1 findings, 2 usage (a bad path, spec,
``lint.toml``, format, rule code or connection).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from airflow_provider_expand.engine.errors import DatabaseError
from airflow_provider_expand.engine.lint import PHASES, RULES, RULES_BY_CODE, Finding, Phase, lint_migration
from airflow_provider_expand.engine.lint.config import LintConfigError
from airflow_provider_expand.engine.lint.docs import explain, phases_of
from airflow_provider_expand.engine.lint.linter import config_near, lint_sql
from airflow_provider_expand.engine.lint.live import LiveSchema
from airflow_provider_expand.engine.lint.report import FORMATS, render
from airflow_provider_expand.spec import SPEC_FILE, SpecError, find_migrations, load_migration

OK, FINDINGS, USAGE = 0, 1, 2


class LintUsageError(ValueError):
    """Something lint was asked that it cannot do (a path, a code, a connection): printed, exit 2."""


def add_lint_command(commands: Any) -> None:
    """The ``lint`` subcommand on the console script's subparsers."""
    lint = commands.add_parser(
        "lint",
        help="check migration folders or SQL files against their phase",
        description="Exit 0 when clean (or warnings only, without --strict), 1 with findings, "
        "2 for a bad path, spec, lint.toml, format, rule code or connection.",
    )
    lint.add_argument(
        "paths", nargs="*", type=Path, metavar="PATH", help="migration folders, roots or SQL files"
    )
    lint.add_argument("--phase", choices=PHASES, help="phase of SQL files whose name does not tell it")
    lint.add_argument("--rules", action="store_true", help="list the rules and their codes, then exit")
    lint.add_argument(
        "--explain", metavar="CODE", help="explain one rule and its safe alternative, then exit"
    )
    lint.add_argument(
        "--format", choices=FORMATS, default="text", help="text (default), json, sarif or github annotations"
    )
    lint.add_argument("--strict", action="store_true", help="warnings fail too (exit 1)")
    lint.add_argument(
        "--migrations-only",
        action="store_true",
        help="skip SQL files outside every migration folder (pre-commit passes every changed file)",
    )
    lint.add_argument(
        "--conn-id",
        metavar="CONN",
        help="an Airflow connection to the target database: real table sizes and existing tables",
    )
    lint.set_defaults(handler=run_lint)


def run_lint(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except LintUsageError as exc:
        print(f"airflow-expand: {exc}", file=sys.stderr)
        return USAGE


def _run(args: argparse.Namespace) -> int:
    if args.rules:
        _print_rules(sys.stdout)
        return OK
    if args.explain:
        rule = RULES_BY_CODE.get(args.explain.strip().upper())
        if rule is None:
            raise LintUsageError(f"lint --explain: unknown rule code {args.explain} (see `lint --rules`)")
        print(explain(rule), end="")
        return OK
    if not args.paths:
        raise LintUsageError("lint: give at least one migration folder or SQL file (or --rules)")
    with _live_schema(args.conn_id) as live:
        findings, errors, files = _lint_paths(
            args.paths,
            args.phase,
            live,
            located=args.format != "text",
            migrations_only=args.migrations_only,
        )
    print(render(findings, args.format), end="")
    for error in errors:
        print(error, file=sys.stderr)
    if errors:
        return USAGE
    return _summary(findings, files, args.strict, sys.stderr)


def _lint_paths(
    paths: list[Path],
    phase: Phase | None,
    live: LiveSchema | None,
    *,
    located: bool,
    migrations_only: bool = False,
) -> tuple[list[Finding], list[str], int]:
    """Findings, problems (exit 2) and the number of SQL files; ``located``: findings name the file as
    the repository has it (for CI tools), not as ``folder/expand.sql``."""
    findings: list[Finding] = []
    errors: list[str] = []
    files = 0
    seen: set[Path] = set()
    for path in paths:
        try:
            targets = _lint_targets(path, phase, migrations_only)
        except (LintUsageError, SpecError) as exc:
            errors.append(str(exc))
            continue
        for target, target_phase in targets:
            if target.resolve() in seen:  # a folder named twice, or two of its files (pre-commit)
                continue
            seen.add(target.resolve())
            try:
                if target_phase is None:
                    spec = load_migration(target)
                    files += len(spec.sql_files())
                    found = lint_migration(spec, live=live)
                    if located:
                        found = [replace(f, file=_shown(spec.folder.parent / f.file)) for f in found]
                else:
                    files += 1
                    found = _lint_file(target, target_phase, live)
            except (SpecError, LintConfigError, LintUsageError) as exc:
                errors.append(str(exc))
                continue
            except DatabaseError as exc:  # the live schema's catalog query (--conn-id)
                errors.append(f"{target}: lint --conn-id: the target database refused a catalog query: {exc}")
                continue
            findings.extend(found)
    return findings, errors, files


def _shown(path: Path) -> str:
    """A path relative to the working directory when it is below it (as code scanning wants), else absolute."""
    absolute = path.resolve()
    try:
        return absolute.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return absolute.as_posix()


def _summary(findings: list[Finding], files: int, strict: bool, out: TextIO) -> int:
    noun = "file" if files == 1 else "files"
    warnings = sum(f.severity == "warning" for f in findings)
    errors = len(findings) - warnings
    if errors or (strict and warnings):
        extra = f" ({warnings} warning(s))" if warnings else ""
        print(f"{len(findings)} finding(s){extra} in {files} SQL {noun}", file=out)
        return FINDINGS
    if warnings:
        print(f"{warnings} warning(s), no errors in {files} SQL {noun} (--strict fails on them)", file=out)
        return OK
    print(f"clean: {files} SQL {noun}", file=out)
    return OK


def _lint_targets(
    path: Path, phase: Phase | None, migrations_only: bool = False
) -> list[tuple[Path, Phase | None]]:
    """What a PATH argument means: migration folders (phase None) or one SQL file with its phase;
    ``migrations_only``: a SQL file outside every migration folder means nothing."""
    if path.is_dir():
        if (path / SPEC_FILE).is_file():
            return [(path, None)]
        folders = find_migrations(path)
        if not folders:
            raise LintUsageError(f"{path}: no {SPEC_FILE} in it or below it")
        return [(folder, None) for folder in folders]
    if not path.exists():
        raise LintUsageError(f"{path}: no such file or folder")
    if path.name == SPEC_FILE:
        return [(path.parent, None)]
    if path.suffix.lower() != ".sql":
        raise LintUsageError(f"{path}: not a migration folder, a migration.yaml or a .sql file")
    folder = _migration_of(path) if phase is None else None
    if folder is not None:
        return [(folder, None)]  # a file of a migration: lint it with the others (expand's context)
    if migrations_only:
        return []
    return [(path, phase or _phase_of(path))]


def _migration_of(path: Path) -> Path | None:
    """The migration folder a file belongs to (the nearest migration.yaml above it, within the repository)."""
    for folder in path.resolve().parents:
        if (folder / SPEC_FILE).is_file():
            return folder
        if (folder / ".git").exists():
            return None
    return None


def _phase_of(path: Path) -> Phase:
    named = [p for p in PHASES if p in path.stem.lower()]
    if len(named) != 1:
        raise LintUsageError(
            f"{path}: cannot tell its phase from the name; pass --phase expand|contract|rollback"
        )
    return named[0]


def _lint_file(path: Path, phase: Phase, live: LiveSchema | None) -> list[Finding]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LintUsageError(f"{path}: cannot be read: {exc}") from exc
    return lint_sql(text, str(path), phase, live=live, config=config_near(path))


def _print_rules(out: TextIO) -> None:
    for rule in RULES:
        print(f"{rule.code}  {rule.name:<30} {phases_of(rule)}; {rule.severity}", file=out)
        print(f"       safe alternative: {rule.alternative}", file=out)


@contextmanager
def _live_schema(conn_id: str | None) -> Iterator[LiveSchema | None]:
    """The target database through an Airflow connection (credentials stay in Airflow's store), read-only."""
    if conn_id is None:
        yield None
        return
    from airflow_provider_expand.hooks.postgres import postgres_connector  # imports Airflow: only here

    try:
        with redirect_stdout(sys.stderr):  # Airflow's logging writes to stdout, where the report goes
            conn = postgres_connector(conn_id, application_name="airflow-expand lint")()
        conn.autocommit = True
        conn.execute("SET default_transaction_read_only = on")
        conn.execute("SET statement_timeout = '30s'")
    except Exception as exc:  # AirflowNotFoundException, psycopg.OperationalError, ...
        raise LintUsageError(
            f"lint --conn-id: cannot connect with Airflow connection {conn_id!r}: {exc}"
        ) from exc
    try:
        yield LiveSchema(conn)
    finally:
        conn.close()
