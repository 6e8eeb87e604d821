"""The migration spec: a folder's ``migration.yaml`` as frozen pydantic models (DESIGN.md, 'A migration is
a folder'). Import from here: ``from airflow_provider_expand.spec import load_migration, MigrationSpec``.
"""

from airflow_provider_expand.spec.checks import RlsSpec, VerifySpec
from airflow_provider_expand.spec.durations import Duration, PositiveDuration, format_duration, parse_duration
from airflow_provider_expand.spec.loader import (
    SPEC_FILE,
    SpecError,
    display_name,
    find_migrations,
    load_migration,
)
from airflow_provider_expand.spec.models import (
    SQL_PHASES,
    BackfillSpec,
    BackupSpec,
    ContractApprovalSpec,
    DeploySpec,
    IndexSpec,
    MigrationSpec,
    MigratorSpec,
    NotifySpec,
    PreflightSpec,
    QueuesSpec,
    SmtpNotifySpec,
    SqlPhase,
)

__all__ = [
    "SPEC_FILE",
    "SQL_PHASES",
    "BackfillSpec",
    "BackupSpec",
    "ContractApprovalSpec",
    "DeploySpec",
    "Duration",
    "IndexSpec",
    "MigrationSpec",
    "MigratorSpec",
    "NotifySpec",
    "PositiveDuration",
    "PreflightSpec",
    "QueuesSpec",
    "RlsSpec",
    "SmtpNotifySpec",
    "SpecError",
    "SqlPhase",
    "VerifySpec",
    "display_name",
    "find_migrations",
    "format_duration",
    "load_migration",
    "parse_duration",
]
