"""``PgDumpOperator`` and ``PgRestoreOperator``: the runbook's backup before the migration, and the last resort.

Both connect the client tools exactly where ``PostgresHook`` connects; the password goes to a passfile
and is registered with Airflow's secret masker, so it appears neither on a command line nor in a log.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any, cast

from airflow.sdk import BaseOperator, Context
from airflow.sdk.log import mask_secret

from airflow_provider_expand.engine.backup.dump import (
    DEFAULT_PREFIX,
    RestoreRefusedError,
    dump_database,
    restore_dump,
)
from airflow_provider_expand.engine.backup.pg_tools import PgTarget
from airflow_provider_expand.hooks.backup_store import backup_file, backup_store
from airflow_provider_expand.hooks.postgres import postgres_connector
from airflow_provider_expand.retries import ClassifiedErrors


def pg_target(postgres_conn_id: str) -> tuple[PgTarget, int]:
    """Where the hook's connection lands (host, port, user, database, TLS) and the server's major version."""
    with postgres_connector(postgres_conn_id)() as conn:
        target = PgTarget.from_connection(conn)
        major = conn.info.server_version // 10000
    if target.password:
        mask_secret(target.password)
    return target, major


class PgDumpOperator(ClassifiedErrors, BaseOperator):
    """``pg_dump -Fc`` of the target database to ``<directory>/<prefix><YYYYMMDD_HHMM>.dump``; returns its path.

    ``directory`` is a local absolute path or an Airflow object storage URL (``s3://<conn_id>@bucket/prefix``),
    which the dump streams to. The file is private (0600 where the store has modes) and appears under its
    final name only once complete and readable.
    """

    template_fields: Sequence[str] = ("directory", "prefix")
    ui_color = "#dbe9f6"

    def __init__(
        self,
        *,
        postgres_conn_id: str,
        directory: str,
        prefix: str = DEFAULT_PREFIX,
        pg_bin_dir: str | None = None,
        dump_timeout: dt.timedelta | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.postgres_conn_id = postgres_conn_id
        self.directory = directory
        self.prefix = prefix
        self.pg_bin_dir = pg_bin_dir
        self.dump_timeout = dump_timeout

    def execute(self, context: Context) -> str:
        store = backup_store(self.directory)  # a bad URL or an unknown connection fails before pg_dump
        target, major = pg_target(self.postgres_conn_id)
        return dump_database(
            target,
            store,
            log=cast(logging.Logger, self.log),
            prefix=self.prefix,
            bin_dir=self.pg_bin_dir,
            server_major=major,
            timeout=self.dump_timeout.total_seconds() if self.dump_timeout else None,
        )


class PgRestoreOperator(ClassifiedErrors, BaseOperator):
    """``pg_restore --clean --if-exists`` of ``dump_path``: restores the backup and loses later writes.

    ``confirm`` (templated, e.g. ``{{ params.confirm }}``) must equal the target database's name, or the
    operator fails before touching anything.
    """

    template_fields: Sequence[str] = ("dump_path", "confirm")
    ui_color = "#f6d5d5"

    def __init__(
        self,
        *,
        postgres_conn_id: str,
        dump_path: str,
        confirm: str,
        pg_bin_dir: str | None = None,
        single_transaction: bool = True,
        restore_timeout: dt.timedelta | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.postgres_conn_id = postgres_conn_id
        self.dump_path = dump_path
        self.confirm = confirm
        self.pg_bin_dir = pg_bin_dir
        self.single_transaction = single_transaction
        self.restore_timeout = restore_timeout

    def execute(self, context: Context) -> None:
        confirm = str(self.confirm or "").strip()
        if not confirm:
            raise RestoreRefusedError(
                f"refusing to restore {self.dump_path}: no confirmation given; type the database name "
                f"of connection {self.postgres_conn_id!r} to confirm"
            )
        dump = backup_file(self.dump_path)
        target, major = pg_target(self.postgres_conn_id)
        restore_dump(
            target,
            dump,
            confirm=confirm,
            log=cast(logging.Logger, self.log),
            bin_dir=self.pg_bin_dir,
            server_major=major,
            single_transaction=self.single_transaction,
            timeout=self.restore_timeout.total_seconds() if self.restore_timeout else None,
        )
