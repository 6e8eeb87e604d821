"""Rules about ``operations:`` in migration.yaml (pgroll's vocabulary). The declarative operations know
their own undo; a raw SQL operation (``sql: {up, down}``, pgroll's name, or ``raw_sql``) only has the one
its author wrote, and without ``down`` a rollback cannot undo what ``up`` did.

Written against the operations as plain dicts (what the YAML holds, or a model's ``model_dump``), so the
rule does not depend on how ``engine/operations`` models them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_expand.engine.lint.findings import Phase, Rule

RAW_SQL_KEYS = ("sql", "raw_sql")


@dataclass(frozen=True)
class RawSQL:
    """One raw SQL operation: where it is in the list, its up and down, and whether it runs in contract."""

    where: str  # operations[2].sql
    up: str
    down: str
    on_complete: bool

    @property
    def up_phase(self) -> Phase:
        return "contract" if self.on_complete else "expand"


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def raw_sql_operations(operations: Sequence[Mapping[str, Any]]) -> Iterator[RawSQL]:
    """Every raw SQL operation of a spec's ``operations:`` list."""
    for index, operation in enumerate(operations):
        for key in RAW_SQL_KEYS:
            body = operation.get(key)
            if isinstance(body, Mapping):
                on_complete = bool(body.get("onComplete", body.get("on_complete", False)))
                yield RawSQL(
                    f"operations[{index}].{key}", _text(body.get("up")), _text(body.get("down")), on_complete
                )


def missing_down(operations: Sequence[Mapping[str, Any]]) -> Iterator[tuple[str, str]]:
    """``(where, message)`` for each raw SQL operation that expand runs and nothing can undo."""
    for raw in raw_sql_operations(operations):
        if not raw.on_complete and raw.up.strip() and not raw.down.strip():
            yield (
                raw.where,
                (
                    f"{raw.where} has up but no down: it runs in expand, and a rollback cannot undo it, so the old "
                    "code is left with whatever up changed"
                ),
            )


RAW_SQL_WITHOUT_DOWN = Rule(
    code="EX906",
    name="raw-sql-without-down",
    alternative="write down: the SQL that undoes up (DROP ... IF EXISTS for what up created), or use a "
    "declarative operation, which knows its own undo; SQL that only contract may run takes onComplete: true",
    phases=frozenset({"expand", "rollback"}),
    explanation=(
        "Declarative operations (add_column, create_index, ...) generate their own rollback. A raw SQL "
        "operation is opaque: its down is the only rollback it has. Without one, a failure after expand "
        "leaves whatever up did in place while the old code runs. Its up is linted as expand (as contract "
        "with onComplete: true) and its down as rollback."
    ),
)
