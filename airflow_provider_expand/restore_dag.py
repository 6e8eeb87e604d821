"""The runbook's last resort, 'Rollback din Backup', as a manual DAG of its own.

It loses every write made since the dump, so it never runs from a migration DAG: a person triggers it,
picks the dump and types the database name to confirm.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param

from airflow_provider_expand.dag_params import START_DATE, TAGS
from airflow_provider_expand.operators.backup import PgRestoreOperator
from airflow_provider_expand.spec import MigrationSpec


def build_restore_dag(spec: MigrationSpec) -> DAG:
    """``restore_from_backup__<id>``: ``pg_restore --clean --if-exists`` of a dump from the backup folder."""
    assert spec.backup is not None
    directory = spec.backup.directory.rstrip("/")  # a path or an object storage URL
    with DAG(
        dag_id=f"restore_from_backup__{spec.id}",
        description=f"LAST RESORT: restore the database of {spec.id} from a dump (loses later writes)",
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        tags=[*TAGS, "restore"],
        params={
            "dump_file": Param(
                "",
                type="string",
                pattern=r"^[A-Za-z0-9_.-]+\.dump$",
                title="Dump file",
                description_md=f"File name of the dump inside `{directory}` (e.g. `pre_migration_20260101_0200.dump`).",
            ),
            "confirm": Param(
                "",
                type="string",
                title="Type the database name to confirm",
                description_md="The restore drops and recreates objects and **loses every write since the dump**. "
                "Type the target database's name to go ahead.",
            ),
        },
        doc_md=f"# Restore {spec.id} from a backup\n\nThe runbook's last resort. Stop the application first.",
        render_template_as_native_obj=True,
    ) as dag:
        PgRestoreOperator(
            task_id="restore",
            postgres_conn_id=spec.postgres_conn_id,
            dump_path=directory + "/{{ params.dump_file }}",
            confirm="{{ params.confirm }}",
        )
    return dag
