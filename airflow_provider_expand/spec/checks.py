"""Post-phase checks in the spec (``verify:``), the runbook's 'Verificări SQL' and 'Verificări Funcționale':
one model whose validator insists on exactly one kind, so a check can never be half of two.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic import model_validator as _model_validator

from airflow_provider_expand.engine.verify.checks import Check, RlsProbe
from airflow_provider_expand.spec.durations import PositiveDuration
from airflow_provider_expand.spec.fragments import SelectQuery
from airflow_provider_expand.spec.names import HttpUrl, Identifier, QualifiedName, SettingName, SettingValue

STRICT = ConfigDict(extra="forbid", frozen=True)
VerifyAfter = Literal["expand", "contract", "both"]


class _Strict(BaseModel):
    model_config = STRICT


class RlsSpec(_Strict):
    """Count ``table``'s rows as ``role`` with ``setting`` = ``value``: tenant isolation as the app sees it."""

    table: QualifiedName
    role: Identifier
    setting: SettingName
    value: SettingValue


class VerifySpec(_Strict):
    """One post-phase check; exactly one kind: sql+expect, rls+expect, sql+max_ms or http+expect_status."""

    name: str = Field(min_length=1)
    sql: SelectQuery | None = None
    rls: RlsSpec | None = None
    http: HttpUrl | None = None
    expect: int | float | bool | str | None = None
    max_ms: float | None = Field(default=None, gt=0)
    expect_status: int | None = Field(default=None, ge=100, le=599)
    timeout: PositiveDuration = dt.timedelta(seconds=10)
    after: VerifyAfter = "contract"

    @_model_validator(mode="after")
    def _one_kind(self) -> VerifySpec:
        given = self.model_fields_set
        sources = [k for k in ("sql", "rls", "http") if getattr(self, k) is not None]
        kinds = "sql + expect, rls + expect, sql + max_ms or http + expect_status"
        if len(sources) != 1:
            got = f" (has {' and '.join(sources)})" if sources else ""
            raise ValueError(f"a check needs exactly one of {kinds}{got}")
        source = sources[0]
        allowed = {"sql": {"expect", "max_ms"}, "rls": {"expect"}, "http": {"expect_status"}}[source]
        partners = [k for k in ("expect", "max_ms", "expect_status") if k in given]
        stray = [k for k in partners if k not in allowed]
        if stray:
            raise ValueError(f"{source} cannot take {', '.join(stray)}: give one of {kinds}")
        if len(partners) > 1:
            raise ValueError(f"{source} takes {' or '.join(partners)}, not both")
        if not partners:
            raise ValueError(f"{source} needs {' or '.join(sorted(allowed))}")
        return self

    @property
    def kind(self) -> Literal["sql", "rls", "latency", "http"]:
        if self.rls is not None:
            return "rls"
        if self.http is not None:
            return "http"
        return "latency" if self.max_ms is not None else "sql"

    def runs_after(self, phase: Literal["expand", "contract"]) -> bool:
        return self.after in (phase, "both")

    def as_check(self) -> Check:
        """The engine's form of this check, for ``VerifyOperator``."""
        rls = self.rls
        return Check(
            name=self.name,
            sql=self.sql,
            rls=RlsProbe(table=rls.table, role=rls.role, setting=rls.setting, value=rls.value)
            if rls
            else None,
            http=str(self.http) if self.http is not None else None,
            expect=self.expect,
            max_ms=self.max_ms,
            expect_status=self.expect_status or 200,
            timeout_seconds=self.timeout.total_seconds(),
        )
