"""The ordered steps of a migration, read off the DAG the factory builds (so the plan cannot drift from it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class PlannedStep:
    """One task of the migration DAG, with what makes it special (when it runs, how many copies)."""

    task_id: str
    operator: str
    note: str

    def __str__(self) -> str:
        return f"{self.task_id:<28} {self.operator:<26} {self.note}".rstrip()


def _note(task: Any) -> str:
    notes: list[str] = []
    expand_input = getattr(task, "expand_input", None)
    if expand_input is not None:
        partitions = expand_input.value.get("partition", [])
        notes.append(f"mapped: {len(partitions)} parallel partitions")
    if getattr(task, "is_teardown", False):
        notes.append("teardown: always runs, after " + ", ".join(sorted(task.upstream_task_ids)))
    elif task.trigger_rule != "all_success":
        notes.append(f"runs on {task.trigger_rule.value} of: " + ", ".join(sorted(task.upstream_task_ids)))
    if getattr(task, "deferrable", False):
        notes.append("deferrable: holds no worker while waiting")
    return "; ".join(notes)


def plan_migration(path: Path) -> tuple[str, list[PlannedStep]]:
    """The DAG id and its tasks in execution order (upstream first; ties in the order they were built)."""
    from airflow_provider_expand.dag_factory import build_migration_dag

    dag = build_migration_dag(path)
    position = {task_id: i for i, task_id in enumerate(dag.task_ids)}
    pending = {task_id: set(dag.get_task(task_id).upstream_task_ids) for task_id in dag.task_ids}
    ordered: list[str] = []
    while pending:
        ready = sorted((t for t, ups in pending.items() if not ups), key=position.__getitem__)
        first = ready[0]
        ordered.append(first)
        del pending[first]
        for ups in pending.values():
            ups.discard(first)
    steps = [
        PlannedStep(
            task_id, type(dag.get_task(task_id)).__name__.replace("Mapped", ""), _note(dag.get_task(task_id))
        )
        for task_id in ordered
    ]
    return dag.dag_id, steps
