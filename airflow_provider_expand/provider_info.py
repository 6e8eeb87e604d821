"""Provider metadata that Airflow discovers through the ``apache_airflow_provider`` entry point: what
``airflow providers list/hooks/triggers/plugins/notifications`` show, and the migration view's plugin.

Connections are the official providers' types (``postgres``, ``redis``, ``docker``, ``smtp``): the hooks
here wrap those providers' hooks, so the provider registers no connection type of its own (registering
theirs again would make Airflow warn that each is already registered).
"""

from typing import Any

from airflow_provider_expand import __version__

INTEGRATION = "Expand/Contract migrations"
_PKG = "airflow_provider_expand"


def _modules(kind: str, names: list[str]) -> list[dict[str, Any]]:
    return [{"integration-name": INTEGRATION, "python-modules": [f"{_PKG}.{kind}.{n}" for n in names]}]


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow's ProvidersManager."""
    return {
        "package-name": "airflow-provider-expand",
        "name": INTEGRATION,
        "description": "Zero-downtime PostgreSQL schema migrations with the Expand/Contract pattern.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": INTEGRATION,
                "tags": ["software"],
            }
        ],
        "operators": _modules(
            "operators",
            [
                "approval",
                "backfill",
                "backup",
                "deploy",
                "index",
                "ledger",
                "lint",
                "migrator",
                "operations",
                "phase_sql",
                "queues",
                "rollback",
                "verify",
            ],
        ),
        "sensors": _modules("sensors", ["backup", "deploy_watch", "preflight", "queues", "soak"]),
        "triggers": _modules("triggers", ["preflight", "queues"]),
        "hooks": _modules("hooks", ["backup_store", "docker", "postgres", "redis"]),
        "notifications": [f"{_PKG}.notifications.MigrationNotifier"],
        "plugins": [{"name": "expand", "plugin-class": f"{_PKG}.plugin.plugin.ExpandPlugin"}],
    }
