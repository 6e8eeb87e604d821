"""``sql``: pgroll's escape hatch. ``up`` runs in the expand (or, with ``onComplete``, at the end of the
contract, after the renames, so it sees the final names), ``down`` in the rollback; the statements are
parsed with pglast and grouped like a SQL file (each ``CONCURRENTLY`` statement alone, outside a
transaction). As in pgroll, a ``sql`` operation without ``onComplete`` is the only operation of its
migration: what it changes is not in the schema model, so no other operation could be checked against it
(the version schema is read from the catalog after it ran)."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field, field_validator, model_validator

from airflow_provider_expand.engine.operations.base import Fields, Operation
from airflow_provider_expand.engine.operations.plan import Group
from airflow_provider_expand.engine.operations.schema import Schema
from airflow_provider_expand.engine.statements import SQLFileError, parse_statements, relations


class RawSQLFields(Fields):
    up: str
    down: str = ""
    on_complete: bool = Field(default=False, alias="onComplete")

    @field_validator("up", "down")
    @classmethod
    def _parses(cls, value: str) -> str:
        try:
            parse_statements(value)
        except SQLFileError as exc:
            raise ValueError(f"line {exc.line}: {exc.message}") from exc
        return value

    @model_validator(mode="after")
    def _up_not_empty(self) -> RawSQLFields:
        if not parse_statements(self.up):
            raise ValueError("up: has no statement")
        if self.on_complete and self.down:
            raise ValueError(
                "down: not allowed with onComplete: the contract runs up, and nothing rolls back a contract"
            )
        return self


def groups(text: str, label: str) -> tuple[Group, ...]:
    """``text``'s statements as groups: contiguous ones share a transaction, CONCURRENTLY ones run alone."""
    out: list[Group] = []
    pending: list[str] = []
    for statement in parse_statements(text):
        if statement.concurrently:
            if pending:
                out.append(Group(tuple(pending), label=label))
                pending = []
            out.append(Group((statement.sql,), autocommit=True, label=label))
        else:
            pending.append(statement.sql)
    if pending:
        out.append(Group(tuple(pending), label=label))
    return tuple(out)


class RawSQL(Operation[RawSQLFields]):
    name = "sql"
    fields_model = RawSQLFields

    @property
    def isolated(self) -> bool:
        return not self.fields.on_complete

    @property
    def after_renames(self) -> bool:
        """``onComplete`` SQL is written against the new version's names (as pgroll runs it after the
        operations before it completed), so the contract runs it after the rename pass."""
        return self.fields.on_complete

    def check(self, schema: Schema) -> None:
        return None

    def expand(self) -> Sequence[Group]:
        return () if self.fields.on_complete else groups(self.fields.up, self.label)

    def contract(self) -> Sequence[Group]:
        return groups(self.fields.up, self.label) if self.fields.on_complete else ()

    def rollback(self) -> Sequence[Group]:
        return groups(self.fields.down, self.label) if self.fields.down else ()

    def tables(self) -> tuple[str, ...]:
        """Every table its statements name (what ``begin`` claims for it)."""
        text = ";\n".join(t for t in (self.fields.up, self.fields.down) if t)
        return tuple(relations(parse_statements(text)))


OPERATION = RawSQL
