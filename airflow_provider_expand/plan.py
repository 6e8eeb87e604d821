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


def phase_sql(spec: Any, conn: Any | None) -> list[str]:
    """Every phase's SQL of the migration ``spec``, as lines to print: the files' text, or the SQL the
    operations generate (planned against ``conn``'s catalog; without one, against an empty schema, which
    only works for operations that create what they touch), with their backfill and index steps and the
    lint findings of the generated SQL."""
    from airflow_provider_expand.engine.operations.errors import OperationError
    from airflow_provider_expand.engine.operations.execute import lint_plan
    from airflow_provider_expand.engine.operations.planner import build_operations, plan_migration
    from airflow_provider_expand.engine.operations.schema import Schema, read_schema

    lines: list[str] = []
    if not spec.operations:
        for phase, path in spec.sql_files().items():
            lines += [f"-- {phase} ({path.name})", path.read_text(encoding="utf-8").rstrip(), ""]
        return lines
    ctx = spec.plan_context()
    model = read_schema(conn, ctx.schema) if conn is not None else Schema()
    try:
        plan = plan_migration(build_operations(spec.operation_entries(), ctx), model, ctx)
    except OperationError as exc:
        hint = "" if conn is not None else " (planned without a database: give --conn to plan against one)"
        return [f"cannot plan: {exc}{hint}"]
    for phase in ("expand", "contract", "rollback"):
        groups = plan.phase(phase)  # type: ignore[arg-type]
        lines.append(f"-- {phase}: {len(groups)} group(s)")
        for number, group in enumerate(groups, 1):
            mode = "autocommit, outside a transaction" if group.autocommit else "one transaction"
            lines.append(f"-- group {number} ({mode}; retried whole on a lock timeout): {group.label}")
            lines += [f"{statement};" for statement in group.statements]
        if phase == "expand":
            for fill in plan.backfills:
                lines.append(
                    f"-- backfill.{fill.table}: UPDATE {fill.physical} SET {fill.set} WHERE {fill.where} (in batches)"
                )
            for index in plan.indexes:
                unique = "UNIQUE " if index.unique else ""
                where = f" WHERE {index.where}" if index.where else ""
                lines.append(
                    f"-- index.{index.name}: CREATE {unique}INDEX CONCURRENTLY ON {index.table} "
                    f"USING {index.using or 'btree'} ({', '.join(index.columns)}){where} (index builder)"
                )
        lines.append("")
    findings = lint_plan(plan)
    # errors start with "lint: " (the CLI exits 1 on them); warnings are shown, as the phase tasks log them
    lines += [f"{'lint' if f.severity == 'error' else 'lint warning'}: {f}" for f in findings] or [
        "lint: the generated SQL is clean"
    ]
    return lines
