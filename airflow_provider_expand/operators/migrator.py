"""``MigratorOperator``: ``expand: {image, command}`` — the app's own migrator (e.g. ``pnpm --filter
@app/database run migrate``) run in the app's image with the docker provider's ``DockerOperator``.

The target database reaches the container as a private environment variable, masked in the logs, never on
the command line (where ``docker inspect`` and ``ps`` would show it).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any, cast

from airflow.providers.docker.operators.docker import DockerOperator
from airflow.providers.postgres.hooks.postgres import PostgresHook
from airflow.sdk import Context
from airflow.sdk.log import mask_secret

from airflow_provider_expand.engine.ledger.store import DEFAULT_SCHEMA, Ledger
from airflow_provider_expand.engine.lifecycle import Event, Lifecycle
from airflow_provider_expand.guards import forward_only_noop
from airflow_provider_expand.hooks.docker import DEFAULT_DOCKER_URL
from airflow_provider_expand.hooks.postgres import postgres_connector
from airflow_provider_expand.masking import mask_url_secrets
from airflow_provider_expand.retries import ClassifiedErrors
from airflow_provider_expand.templated import as_bool

EXPAND_STEP = "expand"


def database_url(postgres_conn_id: str) -> str:
    """``postgresql://user:password@host:port/db`` of the Airflow connection (what app migrators read)."""
    url = PostgresHook(postgres_conn_id=postgres_conn_id).sqlalchemy_url.set(drivername="postgresql")
    return str(url.render_as_string(hide_password=False))


class MigratorOperator(ClassifiedErrors, DockerOperator):
    """Runs ``command`` in ``image`` as the migration's expand, recorded in the ledger like expand.sql.

    ``network_mode`` defaults to ``host`` so the container reaches the database at the address the Airflow
    connection names, as the worker does.
    """

    template_fields: Sequence[str] = (*DockerOperator.template_fields, "is_dry_run")

    def __init__(
        self,
        *,
        migration_id: str,
        postgres_conn_id: str,
        image: str,
        command: str | Sequence[str],
        environment: dict[str, str] | None = None,
        database_env: str = "DATABASE_URL",
        docker_url: str | None = None,
        docker_conn_id: str | None = None,
        network_mode: str = "host",
        ledger_schema: str = DEFAULT_SCHEMA,
        dry_run: bool | str = False,
        timeout: dt.timedelta | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            image=image,
            command=list(command) if not isinstance(command, str) else command,
            environment=dict(environment or {}),
            docker_url=docker_url or DEFAULT_DOCKER_URL,
            docker_conn_id=docker_conn_id,
            network_mode=network_mode,
            mount_tmp_dir=False,
            auto_remove="success",
            execution_timeout=timeout,
            **kwargs,
        )
        mask_url_secrets(docker_url)
        self.migration_id = migration_id
        self.postgres_conn_id = postgres_conn_id
        self.database_env = database_env
        self.ledger_schema = ledger_schema
        self.is_dry_run = dry_run

    def execute(self, context: Context) -> list[str] | str | None:
        if as_bool(self.is_dry_run):
            self.log.info("dry run: would run %s in %s", self.command, self.image)
            return None
        log = cast(logging.Logger, self.log)
        if forward_only_noop(self.postgres_conn_id, self.ledger_schema, self.migration_id, self.task_id, log):
            return None
        url = database_url(self.postgres_conn_id)
        mask_secret(url)
        private: dict[str, str] = dict(getattr(self, "_private_environment", None) or {})
        self._private_environment = {**private, self.database_env: url}
        ledger = Ledger(self.ledger_schema)
        connect = postgres_connector(self.postgres_conn_id)
        with connect() as conn:
            conn.autocommit = True
            ledger.ensure(conn)
            done = ledger.step(conn, self.migration_id, EXPAND_STEP)
            if done is not None and done.status == "success":
                self.log.info("the migrator of %s already succeeded: nothing to do", self.migration_id)
                return None
            Lifecycle(ledger).move(conn, self.migration_id, Event.EXPAND_STARTED)
            ledger.start_step(conn, self.migration_id, EXPAND_STEP)
        self.log.info("running the app's migrator in %s: %s", self.image, self.command)
        try:
            result = super().execute(context)
        except Exception as exc:
            Lifecycle(ledger).record_failure(connect, self.migration_id, EXPAND_STEP, exc, log)
            raise
        with connect() as conn:
            conn.autocommit = True
            ledger.finish_step(conn, self.migration_id, EXPAND_STEP)
            Lifecycle(ledger).move(conn, self.migration_id, Event.EXPANDED)
        return result
