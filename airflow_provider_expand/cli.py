"""``airflow-expand``: lint migrations before they reach a DAG, scaffold a new one, and read where a
migration stands from the ledger of its target database. No Airflow import unless a connection id is
given to ``status`` (a DSN works without Airflow).

Exit codes: 0 fine, 1 findings (lint) or nothing recorded (status), 2 usage, spec or connection errors.
The ``lint`` command lives in :mod:`airflow_provider_expand.lint_cli`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import psycopg

from airflow_provider_expand.engine.ledger.store import (
    DEFAULT_SCHEMA,
    STAMP_COLUMNS,
    Ledger,
    MigrationRecord,
    StepRecord,
)
from airflow_provider_expand.lint_cli import FINDINGS, OK, USAGE, add_lint_command
from airflow_provider_expand.scaffold import ScaffoldError, scaffold_migration
from airflow_provider_expand.spec import SPEC_FILE, SpecError, load_migration


class UsageError(Exception):
    """A problem with what was asked (a path, a name, a connection): printed, exit 2."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code (argparse's own exits included)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return int(args.handler(args))
    except SystemExit as exc:  # --help, or argparse refusing the arguments
        return exc.code if isinstance(exc.code, int) else USAGE
    except (UsageError, SpecError, ScaffoldError) as exc:
        print(f"airflow-expand: {exc}", file=sys.stderr)
        return USAGE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="airflow-expand",
        description="Zero-downtime PostgreSQL migrations (Expand/Contract) for Apache Airflow.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add_lint_command(commands)

    new = commands.add_parser("new", help="scaffold a migration folder that lints clean")
    new.add_argument("name", help="the migration id ([a-z0-9_]+), also the folder and DAG name")
    new.add_argument(
        "--dir", type=Path, help="where to create it (default: dags/migrations if present, else .)"
    )
    new.add_argument("--conn-id", default="postgres_default", help="postgres_conn_id to write in the spec")
    new.set_defaults(handler=_new)

    plan = commands.add_parser("plan", help="the ordered steps of a migration's DAG and every phase's SQL")
    plan.add_argument("path", type=Path, metavar="PATH", help="a migration folder")
    plan.add_argument(
        "--conn", help="plan operations against this database's catalog (a DSN, or an Airflow connection id)"
    )
    plan.set_defaults(handler=_plan)

    pgroll = commands.add_parser("import-pgroll", help="write migration folders from pgroll migration files")
    pgroll.add_argument(
        "files", nargs="+", type=Path, metavar="FILE", help="pgroll migrations (.json, .yaml)"
    )
    pgroll.add_argument("--dir", type=Path, default=Path("."), help="where to write the folders (default .)")
    pgroll.add_argument(
        "--conn-id", default="postgres_default", help="postgres_conn_id to write in the specs"
    )
    pgroll.add_argument("--soak", help="soak to write in the specs (e.g. 24h); none by default")
    pgroll.set_defaults(handler=_import_pgroll)

    status = commands.add_parser(
        "status", help="phase and per-step progress from the target database's ledger"
    )
    status.add_argument("id", nargs="?", help="the migration id (none: every migration in flight)")
    status.add_argument("--conn", required=True, help="a PostgreSQL DSN/URI, or an Airflow connection id")
    status.add_argument("--schema", default=DEFAULT_SCHEMA, help=f"ledger schema (default {DEFAULT_SCHEMA})")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(handler=_status)
    return parser


# -- plan ------------------------------------------------------------------------------------------


def _plan(args: argparse.Namespace) -> int:
    from airflow_provider_expand.plan import plan_migration  # imports Airflow: only for this command

    if not (args.path / SPEC_FILE).is_file():
        raise UsageError(f"plan: {args.path} has no {SPEC_FILE}")
    from airflow_provider_expand.plan import phase_sql

    dag_id, steps = plan_migration(args.path)
    print(f"{dag_id}: {len(steps)} steps")
    for number, step in enumerate(steps, 1):
        print(f"{number:>3}. {step}")
    print()
    spec = load_migration(args.path)
    if args.conn:
        with _connect(args.conn) as conn:
            lines = phase_sql(spec, conn)
    else:
        lines = phase_sql(spec, None)
    print("\n".join(lines))
    return (
        FINDINGS
        if any(line.startswith(("cannot plan:", "lint: ")) and "clean" not in line for line in lines)
        else OK
    )


def _import_pgroll(args: argparse.Namespace) -> int:
    from airflow_provider_expand.pgroll_import import PgrollImportError, import_pgroll

    failed = 0
    for path in args.files:
        try:
            folder = import_pgroll(path, args.dir, postgres_conn_id=args.conn_id, soak=args.soak)
        except PgrollImportError as exc:
            print(f"airflow-expand: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{path} -> {folder}/{SPEC_FILE}")
    return USAGE if failed else OK


# -- new -------------------------------------------------------------------------------------------


def _new(args: argparse.Namespace) -> int:
    directory = args.dir
    if directory is None:
        default = Path("dags") / "migrations"
        directory = default if default.is_dir() else Path(".")
    folder = scaffold_migration(args.name, directory, postgres_conn_id=args.conn_id)
    print(f"created {folder}/ with {SPEC_FILE}, expand.sql, contract.sql, rollback.sql")
    print(f"next: fill them in, then run: airflow-expand lint {folder}")
    return OK


# -- status ----------------------------------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    if args.id is None:
        return _in_flight(args)
    ledger = Ledger(args.schema)
    with _connect(args.conn) as conn:
        try:
            record = ledger.get(conn, args.id)
            steps = ledger.steps(conn, args.id) if record else []
        except psycopg.errors.UndefinedTable:
            print(
                f"no ledger in schema {args.schema} of this database: no migration has run here",
                file=sys.stderr,
            )
            return FINDINGS
    if record is None:
        print(f"migration {args.id} has no entry in the ledger ({args.schema}.migrations)", file=sys.stderr)
        return FINDINGS
    if args.json:
        print(json.dumps({"migration": _jsonable(record), "steps": [_jsonable(s) for s in steps]}, indent=2))
    else:
        _print_status(record, steps, sys.stdout)
    return OK


def _in_flight(args: argparse.Namespace) -> int:
    """Every migration between its begin and the end of its contract, and the tables it holds."""
    from airflow_provider_expand.engine.ledger.holds import in_flight

    with _connect(args.conn) as conn:
        flights = in_flight(conn, args.schema)
    if args.json:
        print(
            json.dumps(
                [{"migration": m, "phase": p, "tables": list(t)} for (m, p), t in flights.items()], indent=2
            )
        )
        return OK
    if not flights:
        print("no migration in flight")
        return OK
    for (migration, phase), tables in flights.items():
        print(f"{migration}: {phase}, holds {', '.join(tables)}")
    return OK


def _connect(target: str) -> psycopg.Connection:
    """A DSN or URI connects directly; anything else is looked up as an Airflow connection id."""
    dsn = target if ("://" in target or "=" in target) else _airflow_dsn(target)
    try:
        return psycopg.connect(
            dsn, autocommit=True, connect_timeout=10, application_name="airflow-expand status"
        )
    except psycopg.Error as exc:
        raise UsageError(f"cannot connect to {_safe(target)}: {exc}") from exc


def _airflow_dsn(conn_id: str) -> str:
    from airflow.sdk import BaseHook  # lazily: only this path needs Airflow (and its configuration)

    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception as exc:  # AirflowNotFoundException, or no metadata database to ask
        raise UsageError(f"Airflow connection {conn_id!r}: {exc}") from exc
    params: dict[str, Any] = {
        "host": conn.host,
        "port": conn.port,
        "user": conn.login,
        "password": conn.password,
        "dbname": conn.schema,
    }
    libpq = {
        "sslmode",
        "sslcert",
        "sslkey",
        "sslrootcert",
        "options",
        "target_session_attrs",
        "connect_timeout",
    }
    params.update({k: v for k, v in (conn.extra_dejson or {}).items() if k in libpq})
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items() if v not in (None, "")})


def _safe(target: str) -> str:
    """The target without its password, for messages."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(target) if ("://" in target or "=" in target) else None
    except psycopg.ProgrammingError:
        return "the given DSN"
    if params is None:
        return f"Airflow connection {target!r}"
    params.pop("password", None)
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})


def _jsonable(record: MigrationRecord | StepRecord) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in vars(record).items()}


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S %Z").strip() if value is not None else "-"


def _progress(step: StepRecord) -> str:
    if not step.rows_done and not step.rows_total:
        return ""
    if step.rows_total:
        share = min(100.0, 100.0 * step.rows_done / step.rows_total)
        return f"{step.rows_done:,} / {step.rows_total:,} rows ({share:.0f}%)"
    return f"{step.rows_done:,} rows"


def _print_status(record: MigrationRecord, steps: Sequence[StepRecord], out: TextIO) -> None:
    run = f" (dag {record.dag_id}, run {record.run_id})" if record.run_id else ""
    print(f"{record.id}: {record.phase}{run}", file=out)
    for column in (*STAMP_COLUMNS, "updated_at"):
        print(f"  {column:<15} {_when(getattr(record, column))}", file=out)
    if not steps:
        print("no steps recorded yet", file=out)
        return
    rows = [("STEP", "PART", "STATUS", "PROGRESS", "STARTED", "FINISHED")]
    for step in steps:
        rows.append(
            (
                step.step,
                str(step.part),
                step.status,
                _progress(step),
                _when(step.started_at),
                _when(step.finished_at),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(file=out)
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(), file=out
        )
    for step in steps:
        detail = [f"last key {step.last_key}"] if step.last_key and step.status != "success" else []
        if step.batch_size and step.status == "running":
            detail.append(f"batch size {step.batch_size}")
        if step.error:
            detail.append(f"error: {step.error}")
        if detail:
            print(f"  {step.step}[{step.part}]: {'; '.join(detail)}", file=out)


if __name__ == "__main__":
    sys.exit(main())
