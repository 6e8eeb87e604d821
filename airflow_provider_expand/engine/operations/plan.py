"""Plans as data: what an operation (and a whole migration) asks the engine to run, never run here.

A phase is a list of :class:`Group`; a group is the unit of one commit and of one lock retry: its
statements run in one transaction and, on a lock timeout, the whole group is retried. An autocommit group
holds exactly one statement that PostgreSQL refuses inside a transaction block (``CREATE INDEX
CONCURRENTLY``). Backfills and index builds are steps of their own, carried out by the backfill engine and
the index builder between the expand and the soak.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from psycopg import sql

Phase = Literal["expand", "contract", "rollback"]
PHASES: tuple[Phase, ...] = ("expand", "contract", "rollback")


@dataclass(frozen=True)
class Group:
    """Statements that commit together (and are retried together on a lock timeout)."""

    statements: tuple[str, ...]
    autocommit: bool = False  # True: one statement, run outside a transaction block
    label: str = ""  # who asked for it: ``operations[2].add_column``, ``version schema``, ...

    def __post_init__(self) -> None:
        if not self.statements:
            raise ValueError("a group needs at least one statement")
        if self.autocommit and len(self.statements) != 1:
            raise ValueError("an autocommit group holds exactly one statement")


def transaction(*statements: str, label: str = "") -> Group:
    """One transaction group of ``statements``."""
    return Group(tuple(statements), autocommit=False, label=label)


def autocommit(statement: str, *, label: str = "") -> Group:
    """One statement run outside a transaction (``CONCURRENTLY``)."""
    return Group((statement,), autocommit=True, label=label)


@dataclass(frozen=True)
class Backfill:
    """Rows of ``table`` to fill in batches after the expand: ``UPDATE table SET <set> WHERE <where>``.

    The operations ask for it by table; the planner turns it into one backfill per table over the
    migration's marker column, so the engine's ``where`` is exact and a resumed run skips what is done.
    """

    table: str  # the table's logical name as the operation names it (the task is ``backfill.<table>``)
    physical: str  # its name in the database during the soak
    set: str = '"_expand_needs_backfill" = false'
    where: str = '"_expand_needs_backfill"'
    key: str | None = None


@dataclass(frozen=True)
class IndexBuild:
    """An index the index builder creates ``CONCURRENTLY`` and checks valid (task ``index.<name>``)."""

    name: str
    table: str  # physical table name, schema-qualified
    columns: tuple[str, ...]  # physical column names
    unique: bool = False
    where: str | None = None
    using: str | None = None


@dataclass(frozen=True)
class OperationPlan:
    """Everything one operation asks for, phase by phase (what ``airflow-expand plan`` prints)."""

    label: str
    expand: tuple[Group, ...] = ()
    backfills: tuple[Backfill, ...] = ()
    indexes: tuple[IndexBuild, ...] = ()
    contract: tuple[Group, ...] = ()
    rollback: tuple[Group, ...] = ()


@dataclass(frozen=True)
class MigrationPlan:
    """The migration's phases in run order, from the snapshot of the catalog they were planned against."""

    migration_id: str
    version_schema: str
    expand: tuple[Group, ...] = ()
    backfills: tuple[Backfill, ...] = ()
    indexes: tuple[IndexBuild, ...] = ()
    contract: tuple[Group, ...] = ()
    rollback: tuple[Group, ...] = ()
    operations: tuple[OperationPlan, ...] = field(default=())
    refresh_views: bool = False  # an isolated ``sql`` operation: the views are read from the catalog after it

    def phase(self, phase: Phase) -> tuple[Group, ...]:
        groups: tuple[Group, ...] = getattr(self, phase)
        return groups

    def phase_sql(self, phase: Phase) -> str:
        """The phase as one SQL text (``;``-separated, a blank line between groups): what is linted."""
        return "\n\n".join(";\n".join(g.statements) + ";" for g in self.phase(phase))

    def backfill(self, table: str) -> Backfill | None:
        return next((b for b in self.backfills if b.table == table), None)

    def index(self, name: str) -> IndexBuild | None:
        return next((i for i in self.indexes if i.name == name), None)


# -- SQL building helpers every operation shares: identifiers always quoted -------------------------


def ident(*parts: str) -> str:
    """``"schema"."name"``: identifiers quoted the way psycopg.sql quotes them (no connection needed)."""
    return ".".join(sql.Identifier(p).as_string(None) for p in parts)


def literal(value: str) -> str:
    """A text literal, quoted by psycopg (for comments and the version-schema check in triggers)."""
    return sql.Literal(value).as_string(None)


def idents(names: Iterable[str]) -> str:
    return ", ".join(ident(n) for n in names)


def flatten(groups: Iterable[Sequence[Group]]) -> tuple[Group, ...]:
    return tuple(g for gs in groups for g in gs)
