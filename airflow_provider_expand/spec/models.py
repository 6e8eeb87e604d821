"""The migration spec: one pydantic model per section of ``migration.yaml`` (DESIGN.md, 'A migration is a
folder'). Strict and frozen: an unknown key is an error, never a silently ignored typo.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, Discriminator, Field, Tag, ValidationInfo, field_validator
from pydantic import model_validator as _model_validator

from airflow_provider_expand.engine.backup.store import is_url
from airflow_provider_expand.engine.ledger.store import DEFAULT_SCHEMA
from airflow_provider_expand.engine.operations.base import Fields, PlanContext
from airflow_provider_expand.engine.operations.errors import OperationError
from airflow_provider_expand.engine.soak import ContractWindow
from airflow_provider_expand.spec.checks import STRICT, VerifySpec
from airflow_provider_expand.spec.durations import Duration, PositiveDuration
from airflow_provider_expand.spec.fragments import Assignments, Predicate
from airflow_provider_expand.spec.health import BackfillHealthSpec, HealthSpec
from airflow_provider_expand.spec.names import (
    ConnId,
    ContainerName,
    HttpUrl,
    Identifier,
    MigrationId,
    QualifiedName,
    QueueName,
)
from airflow_provider_expand.spec.operations import _EntryBase, entry_model

if TYPE_CHECKING:
    OperationEntry = _EntryBase
else:
    OperationEntry = entry_model()

SqlPhase = Literal["expand", "contract", "rollback"]
SQL_PHASES: tuple[SqlPhase, ...] = ("expand", "contract", "rollback")
NotifyEvent = Literal["failure", "rollback", "completion"]


class _Strict(BaseModel):
    model_config = STRICT


class PreflightSpec(_Strict):
    """The runbook's 'Verificare Conexiuni Active': wait out long transactions before any DDL."""

    max_transaction_age: PositiveDuration = dt.timedelta(minutes=5)
    wait: Duration = dt.timedelta(minutes=10)


class BackupSpec(_Strict):
    """A fresh, readable dump before anything changes ('Verificare Backup')."""

    # an absolute path, or an Airflow object storage URL (s3://<conn_id>@bucket/prefix) every worker reads
    directory: str
    pattern: str = "pre_migration_*.dump"
    max_age: PositiveDuration = dt.timedelta(hours=1)
    take: bool = False
    must_contain: tuple[QualifiedName, ...] = ()

    @field_validator("directory")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if is_url(value):
            if not urlsplit(value).netloc.rpartition("@")[2]:
                raise ValueError(
                    f"{value!r}: an object storage URL names its bucket (s3://conn_id@bucket/path)"
                )
            return value
        if not Path(value).is_absolute():
            raise ValueError(
                f"{value!r} must be an absolute path (workers run in other directories) or an object "
                "storage URL such as s3://conn_id@bucket/path"
            )
        return value

    @field_validator("pattern")
    @classmethod
    def _file_pattern(cls, value: str) -> str:
        if not value or "/" in value:
            raise ValueError(
                f"{value!r} must be a file name pattern without '/' (it is matched in directory)"
            )
        return value


class QueuesSpec(_Strict):
    """BullMQ queues to pause and drain around the DDL ('Drain Queues')."""

    names: tuple[QueueName, ...] = Field(min_length=1)
    prefix: QueueName = "bull"
    drain_timeout: PositiveDuration = dt.timedelta(minutes=30)
    pause_url: HttpUrl | None = None
    resume_url: HttpUrl | None = None

    @field_validator("names")
    @classmethod
    def _distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        twice = sorted({n for n in value if value.count(n) > 1})
        if twice:
            raise ValueError(f"lists {', '.join(twice)} more than once")
        return value

    @field_validator("resume_url")
    @classmethod
    def _paired(cls, value: str | None, info: ValidationInfo) -> str | None:
        if (value is None) != (info.data.get("pause_url") is None):
            raise ValueError(
                "pause_url and resume_url go together: a queue paused by URL must be resumed by URL"
            )
        return value


class MigratorSpec(_Strict):
    """``expand: {image, command}``: the application's own migrator, run in its image."""

    image: str = Field(min_length=1)
    command: str | tuple[str, ...]
    environment: dict[str, str] = Field(default_factory=dict)

    @field_validator("command")
    @classmethod
    def _not_empty(cls, value: str | tuple[str, ...]) -> str | tuple[str, ...]:
        if not value or (isinstance(value, str) and not value.strip()):
            raise ValueError("must not be empty")
        return value


class DeploySpec(_Strict):
    """Deploy the new code and watch it ('Deploy New Code', 'Escalation Path')."""

    container: ContainerName
    image: str = Field(min_length=1)
    health_url: HttpUrl
    health_timeout: PositiveDuration = dt.timedelta(minutes=5)
    watch: Duration = dt.timedelta(minutes=15)
    escalate_after: PositiveDuration = dt.timedelta(minutes=15)
    max_error_lines: int = Field(default=0, ge=0)
    metrics_url: HttpUrl | None = None
    max_5xx_rate: float | None = Field(default=None, ge=0, le=1)
    docker_conn_id: ConnId | None = None
    docker_url: str | None = None

    @field_validator("docker_url")
    @classmethod
    def _one_engine(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("docker_conn_id") is not None:
            raise ValueError("give docker_conn_id or docker_url, not both")
        return value


class SmtpNotifySpec(_Strict):
    to: tuple[str, ...] = Field(min_length=1)
    conn_id: ConnId = "smtp_default"
    from_email: str | None = None

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [a for a in value if "@" not in a or " " in a.strip()]
        if bad:
            raise ValueError(f"{', '.join(bad)} is not an e-mail address")
        return value


class ContractApprovalSpec(_Strict):
    """A person decides, in the UI's Required Actions, when the contract runs: contract now, wait (ask again
    after ``timeout``) or roll back. No answer within ``timeout`` counts as wait, never as a rollback."""

    # Airflow user ids who may answer; none: anyone allowed to act on the DAG's task instances
    approvers: tuple[str, ...] = ()
    timeout: PositiveDuration = dt.timedelta(hours=24)


class NotifySpec(_Strict):
    """Who hears about a failure, a rollback or the end (the runbook's T+30 'Notifică tech lead')."""

    smtp: SmtpNotifySpec | None = None
    events: tuple[NotifyEvent, ...] = ("failure", "rollback", "completion")
    # a run still going this long after it was queued notifies (an Airflow Deadline Alert, sent from the
    # triggerer): the migration took longer than expected, someone should look
    deadline: PositiveDuration | None = None

    @field_validator("deadline")
    @classmethod
    def _deadline_needs_a_notifier(
        cls, value: dt.timedelta | None, info: ValidationInfo
    ) -> dt.timedelta | None:
        if value is not None and info.data.get("smtp") is None:
            raise ValueError("needs a notifier to send it (smtp)")
        return value


def _one_or_list(value: Any) -> Any:
    return (value,) if isinstance(value, str) else value


# ``key: id`` or ``key: [shop_id, id]``: always a tuple of column names, in key order.
KeyColumns = Annotated[tuple[Identifier, ...], BeforeValidator(_one_or_list), Field(min_length=1)]


class BackfillSpec(_Strict):
    """A batched ``UPDATE <table> SET <set> WHERE <where>`` ('Migrare Date', for big tables)."""

    table: QualifiedName
    set: Assignments
    where: Predicate
    # the column(s) to walk: default the primary key, else the narrowest unique index on NOT NULL columns
    key: KeyColumns | None = None
    batch_size: int = Field(default=10_000, gt=0, le=1_000_000)
    # each batch holds its rows' locks this long: the worst wait it can add to an application write
    target_batch_time: PositiveDuration = dt.timedelta(milliseconds=50)
    # a fixed wait after every batch, on top of the health gates' feedback (none by default)
    pause: Duration = dt.timedelta(0)
    partitions: int = Field(default=1, gt=0, le=64)
    health: BackfillHealthSpec | None = None  # overrides keys of the top-level health:

    @property
    def step_name(self) -> str:
        return f"backfill:{self.table}"


class IndexSpec(_Strict):
    """An index built ``CONCURRENTLY`` and checked valid afterwards ('Adăugare Index')."""

    name: Identifier
    table: QualifiedName
    columns: tuple[Identifier, ...] = Field(min_length=1)
    where: Predicate | None = None
    unique: bool = False
    using: Identifier = "btree"

    @property
    def step_name(self) -> str:
        return f"index:{self.name}"


def _expand_kind(value: Any) -> str:
    return "<migrator>" if isinstance(value, dict | MigratorSpec) else "<file>"


SqlFile = Annotated[str, Field(min_length=1)]
ExpandSource = Annotated[
    Annotated[SqlFile, Tag("<file>")] | Annotated[MigratorSpec, Tag("<migrator>")],
    Discriminator(_expand_kind),
]


def _check_sql_file(value: str | None, info: ValidationInfo) -> str | None:
    """A phase's SQL file must sit inside the migration folder and exist (its content is linted later)."""
    if value is None:
        return None
    folder = info.data.get("folder")
    if not isinstance(folder, Path):
        return value
    path = (folder / value).resolve()
    if Path(value).is_absolute() or not path.is_relative_to(folder.resolve()):
        raise ValueError(f"{value!r} must be a file inside the migration folder")
    if not path.is_file():
        raise ValueError(f"file {value} not found in {folder.name}/")
    return value


class MigrationSpec(_Strict):
    """A whole ``migration.yaml``, plus the folder it came from (SQL files resolve against it)."""

    folder: Path
    id: MigrationId
    description: str = ""
    postgres_conn_id: ConnId
    redis_conn_id: ConnId | None = None
    lock_timeout: PositiveDuration = dt.timedelta(seconds=2)
    ddl_retries: int = Field(default=20, ge=0, le=1000)
    statement_timeout: PositiveDuration | None = None
    # Airflow's retries of a task after a transient failure (connection lost, server restarting, ...)
    retries: int = Field(default=3, ge=0, le=50)
    retry_delay: PositiveDuration = dt.timedelta(seconds=30)
    preflight: PreflightSpec = PreflightSpec()
    health: HealthSpec = HealthSpec()
    backup: BackupSpec | None = None
    queues: QueuesSpec | None = None
    expand: ExpandSource | None = None
    deploy: DeploySpec | None = None
    notify: NotifySpec | None = None
    backfill: tuple[BackfillSpec, ...] = ()
    indexes: tuple[IndexSpec, ...] = ()
    soak: Duration | None = None
    contract: SqlFile | None = None
    contract_window: str | None = None
    contract_approval: ContractApprovalSpec | None = None
    rollback: SqlFile | None = None
    verify: tuple[VerifySpec, ...] = ()
    # pgroll's vocabulary instead of the expand/contract/rollback files (docs/operations.md)
    operations: tuple[OperationEntry, ...] = ()
    ledger_schema: Identifier = DEFAULT_SCHEMA
    tags: tuple[str, ...] = ()

    @field_validator("queues")
    @classmethod
    def _queues_need_redis(cls, value: QueuesSpec | None, info: ValidationInfo) -> QueuesSpec | None:
        if value is not None and info.data.get("redis_conn_id") is None:
            raise ValueError("needs redis_conn_id (the Airflow connection of the Redis holding the queues)")
        return value

    @field_validator("expand")
    @classmethod
    def _expand_file(
        cls, value: str | MigratorSpec | None, info: ValidationInfo
    ) -> str | MigratorSpec | None:
        return _check_sql_file(value, info) if isinstance(value, str) else value

    @field_validator("contract", "rollback")
    @classmethod
    def _phase_file(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _check_sql_file(value, info)

    @field_validator("contract_window")
    @classmethod
    def _window(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        ContractWindow.parse(value)
        if info.data.get("contract") is None:
            raise ValueError("there is no contract to schedule")
        return value

    @field_validator("contract_approval")
    @classmethod
    def _approval(
        cls, value: ContractApprovalSpec | None, info: ValidationInfo
    ) -> ContractApprovalSpec | None:
        if value is not None and info.data.get("contract") is None:
            raise ValueError("there is no contract to approve")
        return value

    @field_validator("backfill")
    @classmethod
    def _one_backfill_per_table(cls, value: tuple[BackfillSpec, ...]) -> tuple[BackfillSpec, ...]:
        return _distinct(value, "table", lambda b: b.table)

    @field_validator("indexes")
    @classmethod
    def _distinct_indexes(cls, value: tuple[IndexSpec, ...]) -> tuple[IndexSpec, ...]:
        return _distinct(value, "name", lambda i: i.name)

    @field_validator("verify")
    @classmethod
    def _distinct_checks(cls, value: tuple[VerifySpec, ...]) -> tuple[VerifySpec, ...]:
        return _distinct(value, "name", lambda v: v.name)

    @_model_validator(mode="after")
    def _something_to_do(self) -> MigrationSpec:
        if self.operations:
            self._check_operations()
        elif self.expand is None and not self.backfill and not self.indexes and self.contract is None:
            raise ValueError(
                "nothing to do: give at least one of operations, expand, backfill, indexes, contract"
            )
        files = [(p, f) for p in SQL_PHASES if (f := self._file_name(p))]
        for i, (phase, name) in enumerate(files):
            for other, other_name in files[i + 1 :]:
                if Path(name) == Path(other_name):
                    raise ValueError(f"{phase} and {other} both name {name}; each phase needs its own file")
        return self

    def _check_operations(self) -> None:
        """One or the other: operations, or the phase files; and what can be judged without a database."""
        given = [k for k in ("expand", "contract", "rollback") if getattr(self, k) is not None]
        if given:
            raise ValueError(
                f"operations: give operations or {'/'.join(given)}, not both (operations generate every phase)"
            )
        from airflow_provider_expand.engine.operations.planner import build_operations, check_isolation

        ops = build_operations(self.operation_entries(), self.plan_context())
        try:
            check_isolation(ops)
        except OperationError as exc:
            raise ValueError(exc.located) from exc
        taken = {b.table for b in self.backfill} | {i.name for i in self.indexes}
        for op in ops:
            for name in (*op.backfill_tables(), *op.index_names()):
                if name in taken:
                    raise ValueError(f"{op.label}: {name}: also listed under backfill/indexes; list it once")

    def operation_entries(self) -> list[tuple[str, Fields]]:
        """The ``operations`` list as (pgroll name, fields)."""
        return [entry.entry() for entry in self.operations]

    def plan_context(self, schema: str = "public") -> PlanContext:
        """What the operations plan with: the version schema is named after the migration."""
        return PlanContext(migration_id=self.id, schema=schema, source=f"{self.folder.name}/migration.yaml")

    # -- helpers for the DAG factory, the linter and the CLI --------------------------------------

    @property
    def source(self) -> Path:
        """The ``migration.yaml`` this spec was read from."""
        return self.folder / "migration.yaml"

    @property
    def migrator(self) -> MigratorSpec | None:
        """The app's own migrator when ``expand`` is ``{image, command}``."""
        return self.expand if isinstance(self.expand, MigratorSpec) else None

    @property
    def window(self) -> ContractWindow | None:
        return ContractWindow.parse(self.contract_window) if self.contract_window else None

    def _file_name(self, phase: SqlPhase) -> str | None:
        value = getattr(self, phase)
        return value if isinstance(value, str) else None

    def sql_path(self, phase: SqlPhase) -> Path | None:
        """The SQL file of ``phase``, or None when the phase has none (absent, or a migrator image)."""
        name = self._file_name(phase)
        return self.folder / name if name else None

    def sql_files(self) -> dict[SqlPhase, Path]:
        """Every phase that has a SQL file, in run order."""
        return {p: path for p in SQL_PHASES if (path := self.sql_path(p)) is not None}

    def checks_after(self, phase: Literal["expand", "contract"]) -> tuple[VerifySpec, ...]:
        """The ``verify`` entries that run after ``phase`` (``verify_expand`` or the final ``verify``)."""
        return tuple(v for v in self.verify if v.runs_after(phase))


def _distinct(items: tuple[Any, ...], key: str, get: Any) -> tuple[Any, ...]:
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        value = get(item)
        if value in seen:
            raise ValueError(
                f"{key} {value} appears twice ([{seen[value]}] and [{i}]); each step needs its own"
            )
        seen[value] = i
    return items
