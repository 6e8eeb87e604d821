"""Post-phase verification (the runbook's 'Verificări'): SQL expectations, RLS as the app's role,
query latency, HTTP health, and the automatic checks that a phase left policies and indexes intact.

Every SQL check runs in a READ ONLY transaction that is rolled back, so a check can never change data.
"""

from __future__ import annotations

import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql

from airflow_provider_expand.engine.database import Connector
from airflow_provider_expand.engine.statements import table_identifier

LATENCY_RUNS = 7  # one warm-up plus p95 over the rest


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check, with the why in ``detail``."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class RlsProbe:
    """Count rows of ``table`` as ``role`` with ``setting`` = ``value`` (tenant isolation)."""

    table: str
    role: str
    setting: str
    value: str


@dataclass(frozen=True)
class Check:
    """One verification; exactly one of ``sql`` / ``rls`` / ``http`` is set."""

    name: str
    sql: str | None = None
    rls: RlsProbe | None = None
    http: str | None = None
    expect: Any = None
    max_ms: float | None = None
    expect_status: int = 200
    timeout_seconds: float = 10.0


def check_from_mapping(data: Mapping[str, Any]) -> Check:
    """A check from its spec form (``{name, sql, expect}``, ``{name, rls: {...}, expect}``, ...)."""
    fields = {k: v for k, v in data.items() if v is not None}
    rls = fields.pop("rls", None)
    timeout = fields.pop("timeout", None)
    if timeout is not None:
        fields["timeout_seconds"] = (
            timeout.total_seconds() if hasattr(timeout, "total_seconds") else float(timeout)
        )
    return Check(**fields, rls=RlsProbe(**rls) if rls else None)


def _matches(actual: Any, expected: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return bool(actual) == bool(expected) and type(actual) is type(expected)
    if isinstance(expected, int | float | Decimal) and isinstance(actual, int | float | Decimal):
        return Decimal(str(actual)) == Decimal(str(expected))
    return str(actual) == str(expected)


def _read_only(conn: psycopg.Connection, statement_timeout_ms: int) -> None:
    conn.execute("SET TRANSACTION READ ONLY")
    conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(f"{statement_timeout_ms}ms")))


def _first_value(conn: psycopg.Connection, query: str) -> Any:
    row = conn.execute(query).fetchone()
    return None if row is None else row[0]


def run_sql_check(connect: Connector, check: Check) -> CheckResult:
    assert check.sql is not None
    with connect() as conn:
        try:
            _read_only(conn, int(check.timeout_seconds * 1000))
            if check.max_ms is not None:
                return _latency(conn, check)
            actual = _first_value(conn, check.sql)
        except psycopg.Error as exc:
            return CheckResult(check.name, False, f"query failed: {str(exc).strip()}")
        finally:
            conn.rollback()
    if _matches(actual, check.expect):
        return CheckResult(check.name, True, f"returned {actual!r} as expected")
    return CheckResult(check.name, False, f"returned {actual!r}, expected {check.expect!r}")


def _latency(conn: psycopg.Connection, check: Check) -> CheckResult:
    assert check.sql is not None and check.max_ms is not None
    timings: list[float] = []
    for _ in range(LATENCY_RUNS):
        started = time.perf_counter()
        conn.execute(check.sql).fetchall()
        timings.append((time.perf_counter() - started) * 1000)
    measured = timings[1:]  # the first run warms caches
    p95 = statistics.quantiles(measured, n=20, method="inclusive")[18]
    detail = f"p95 {p95:.1f} ms over {len(measured)} runs (limit {check.max_ms:g} ms)"
    return CheckResult(check.name, p95 <= check.max_ms, detail)


def run_rls_check(connect: Connector, check: Check) -> CheckResult:
    """Count rows as the application's role: superusers and owners bypass RLS, so they are refused."""
    probe = check.rls
    assert probe is not None
    with connect() as conn:
        try:
            role = conn.execute(
                "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = %s", (probe.role,)
            ).fetchone()
            if role is None:
                return CheckResult(check.name, False, f"role {probe.role!r} does not exist")
            if role[0] or role[1]:
                return CheckResult(
                    check.name, False, f"role {probe.role!r} bypasses RLS (superuser/BYPASSRLS)"
                )
            owner = conn.execute(
                "SELECT pg_get_userbyid(c.relowner), c.relrowsecurity, c.relforcerowsecurity"
                " FROM pg_class c WHERE c.oid = to_regclass(%s)",
                (probe.table,),
            ).fetchone()
            if owner is None:
                return CheckResult(check.name, False, f"table {probe.table!r} does not exist")
            if not owner[1]:
                return CheckResult(check.name, False, f"row level security is not enabled on {probe.table}")
            if owner[0] == probe.role and not owner[2]:
                return CheckResult(
                    check.name, False, f"role {probe.role!r} owns {probe.table} and bypasses RLS"
                )
            _read_only(conn, int(check.timeout_seconds * 1000))
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(probe.role)))
            conn.execute("SELECT set_config(%s, %s, true)", (probe.setting, probe.value))
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(table_identifier(probe.table))
            ).fetchone()
            actual = row[0] if row else None
        except psycopg.Error as exc:
            return CheckResult(check.name, False, f"query as {probe.role} failed: {str(exc).strip()}")
        finally:
            conn.rollback()
    detail = f"as {probe.role} with {probe.setting}={probe.value!r}: {actual} rows visible in {probe.table}"
    expected = 0 if check.expect is None else check.expect
    return CheckResult(check.name, _matches(actual, expected), f"{detail} (expected {expected!r})")


def run_http_check(check: Check) -> CheckResult:
    assert check.http is not None
    try:
        with urllib.request.urlopen(check.http, timeout=check.timeout_seconds) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = int(exc.code)
    except (urllib.error.URLError, OSError) as exc:
        return CheckResult(check.name, False, f"GET {check.http} failed: {exc}")
    return CheckResult(
        check.name,
        status == check.expect_status,
        f"GET {check.http} -> {status} (expected {check.expect_status})",
    )


def run_check(connect: Connector, check: Check) -> CheckResult:
    if check.rls is not None:
        return run_rls_check(connect, check)
    if check.http is not None:
        return run_http_check(check)
    return run_sql_check(connect, check)


# -- automatic checks around a phase -------------------------------------------------------------


@dataclass(frozen=True)
class SchemaSnapshot:
    """RLS state and policies of some tables, taken before a phase to compare with after it."""

    policies: Mapping[str, Sequence[Sequence[Any]]] = field(default_factory=dict)
    rls_enabled: Mapping[str, bool] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "policies": {k: [list(p) for p in v] for k, v in self.policies.items()},
            "rls": dict(self.rls_enabled),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SchemaSnapshot:
        return cls(
            policies={k: [list(p) for p in v] for k, v in data.get("policies", {}).items()},
            rls_enabled=dict(data.get("rls", {})),
        )


def snapshot(connect: Connector, tables: Iterable[str]) -> SchemaSnapshot:
    """Policies (name, command, roles, USING, WITH CHECK) and RLS flags of ``tables`` that exist."""
    policies: dict[str, list[list[Any]]] = {}
    rls: dict[str, bool] = {}
    with connect() as conn:
        for table in sorted(set(tables)):
            row = conn.execute(
                "SELECT relrowsecurity FROM pg_class WHERE oid = to_regclass(%s)", (table,)
            ).fetchone()
            if row is None:
                continue
            rls[table] = bool(row[0])
            rows = conn.execute(
                "SELECT polname::text, polcmd::text, polpermissive,"
                " ARRAY(SELECT rolname::text FROM pg_roles WHERE oid = ANY(polroles) ORDER BY 1),"
                " pg_get_expr(polqual, polrelid), pg_get_expr(polwithcheck, polrelid)"
                " FROM pg_policy WHERE polrelid = to_regclass(%s) ORDER BY polname",
                (table,),
            ).fetchall()
            policies[table] = [list(r) for r in rows]
        conn.rollback()
    return SchemaSnapshot(policies=policies, rls_enabled=rls)


def compare_policies(
    before: SchemaSnapshot, after: SchemaSnapshot, fates: Mapping[str, str | None] | None = None
) -> list[CheckResult]:
    """One result per table: RLS still enabled where it was, and the same policies. ``fates``: the tables
    the phase renamed (name -> new name, compared under it) or dropped on purpose (name -> None)."""
    results: list[CheckResult] = []
    fates = fates or {}
    for table, was_enabled in sorted(before.rls_enabled.items()):
        name = f"RLS policies intact on {table}"
        now = fates.get(table, table)
        if now is None:
            results.append(CheckResult(name, True, f"{table} was dropped by the migration"))
            continue
        if now != table:
            name += f" (now {now})"
        if now not in after.rls_enabled:
            results.append(CheckResult(name, False, f"{now} no longer exists"))
            continue
        if was_enabled and not after.rls_enabled[now]:
            results.append(CheckResult(name, False, f"row level security was disabled on {now}"))
            continue
        old = {p[0]: p for p in before.policies.get(table, [])}
        new = {p[0]: p for p in after.policies.get(now, [])}
        missing = sorted(set(old) - set(new))
        changed = sorted(k for k in set(old) & set(new) if list(old[k]) != list(new[k]))
        if missing or changed:
            parts = [f"dropped: {', '.join(missing)}"] if missing else []
            parts += [f"changed: {', '.join(changed)}"] if changed else []
            results.append(CheckResult(name, False, "; ".join(parts)))
        else:
            results.append(CheckResult(name, True, f"{len(old)} policies unchanged"))
    return results


def invalid_indexes(connect: Connector, tables: Iterable[str]) -> list[CheckResult]:
    """A failed concurrent build leaves an INVALID index that slows writes and serves no reads."""
    results: list[CheckResult] = []
    with connect() as conn:
        for table in sorted(set(tables)):
            if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() in (None, (None,)):
                continue
            rows = conn.execute(
                "SELECT i.indexrelid::regclass::text FROM pg_index i"
                " WHERE i.indrelid = to_regclass(%s) AND NOT (i.indisvalid AND i.indisready) ORDER BY 1",
                (table,),
            ).fetchall()
            bad = [r[0] for r in rows]
            detail = f"invalid: {', '.join(bad)}" if bad else "all indexes valid"
            results.append(CheckResult(f"no invalid index on {table}", not bad, detail))
        conn.rollback()
    return results
