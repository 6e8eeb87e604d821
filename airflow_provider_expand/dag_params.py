"""What a person sees of a migration DAG: its trigger form (validated params), its docs and tags.

No param carries SQL or identifiers: those come only from the reviewed migration folder.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param

from airflow_provider_expand.spec import MigrationSpec

# Migration DAGs are triggered by hand (schedule=None); a fixed past start date makes them runnable at once.
START_DATE = pendulum.datetime(2024, 1, 1, tz="UTC")
DRY_RUN = "{{ params.dry_run }}"
TAGS = ["expand-contract"]

PARAMS: dict[str, Param] = {
    "dry_run": Param(
        False,
        type="boolean",
        title="Dry run",
        description_md="Lint, check and log every statement and batch that would run; change nothing.",
    ),
    "batch_size": Param(
        None,
        type=["null", "integer"],
        minimum=1,
        maximum=1_000_000,
        title="Backfill batch size",
        description_md="Starting batch size of every backfill, overriding `migration.yaml` (it still adapts "
        "towards the target batch time). Empty: the spec's.",
    ),
    "skip_queue_drain": Param(
        False,
        type="boolean",
        title="Skip queue drain",
        description_md="Pause the queues but do not wait for active jobs to finish. Only for an expand that "
        "cannot conflict with the jobs in flight.",
    ),
}


def doc_md(spec: MigrationSpec) -> str:
    """The DAG's page in the UI: the description and the SQL of each phase, to review before triggering."""
    parts = [f"# {spec.id}", "", spec.description, ""]
    for phase, path in spec.sql_files().items():
        parts += [
            f"## {phase}: `{path.name}`",
            "",
            "```sql",
            path.read_text(encoding="utf-8").strip(),
            "```",
            "",
        ]
    return "\n".join(parts)
