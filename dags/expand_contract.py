"""One DAG per migration folder under ``dags/migrations`` (and a restore DAG where a backup is configured)."""

from pathlib import Path

from airflow_provider_expand.dag_factory import build_migration_dags

globals().update(build_migration_dags(Path(__file__).parent / "migrations"))
