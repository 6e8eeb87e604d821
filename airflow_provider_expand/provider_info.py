"""Provider metadata that Airflow discovers through the ``apache_airflow_provider`` entry point."""

from typing import Any

from airflow_provider_expand import __version__


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to ``airflow providers list``."""
    return {
        "package-name": "airflow-provider-expand",
        "name": "Expand/Contract migrations",
        "description": "Zero-downtime PostgreSQL schema migrations with the Expand/Contract pattern.",
        "versions": [__version__],
    }
