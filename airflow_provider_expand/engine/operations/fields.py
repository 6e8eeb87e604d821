"""The fields shared by several operations, with pgroll's exact names (its schema.json ``$defs``)."""

from __future__ import annotations

from typing import Literal

from pglast import ast
from pydantic import Field, field_validator

from airflow_provider_expand.engine.operations.base import Fields
from airflow_provider_expand.engine.statements import FragmentError, parse_fragment

ForeignKeyAction = Literal["NO ACTION", "RESTRICT", "CASCADE", "SET NULL", "SET DEFAULT"]
MatchType = Literal["SIMPLE", "FULL", "PARTIAL"]
Name = str  # an identifier as written in the migration (quoted when used)


def check_expression(text: str) -> str:
    """``text`` must be exactly one SQL expression (``SELECT (<text>)`` parses to one plain SELECT)."""
    if not text.strip():
        raise ValueError("must not be empty")
    try:
        node = parse_fragment(f"SELECT ({text})")
    except FragmentError as exc:
        raise ValueError(f"is not one SQL expression: {exc}") from exc
    if not isinstance(node, ast.SelectStmt):
        raise ValueError("is not one SQL expression (a ';' or a statement?)")
    extra = [
        f
        for f in ("fromClause", "whereClause", "groupClause", "havingClause", "sortClause", "limitCount")
        if getattr(node, f, None)
    ]
    if extra or len(node.targetList or ()) != 1:
        raise ValueError("is not one SQL expression")
    return text


def check_type(text: str) -> str:
    """``text`` must be one PostgreSQL type name (``CAST(NULL AS <text>)`` parses)."""
    if not text.strip():
        raise ValueError("must not be empty")
    try:
        node = parse_fragment(f"SELECT CAST(NULL AS {text})")
    except FragmentError as exc:
        raise ValueError(f"is not a type: {exc}") from exc
    if not isinstance(node, ast.SelectStmt) or len(node.targetList or ()) != 1 or node.fromClause:
        raise ValueError("is not one type name")
    return text


class CheckConstraint(Fields):
    name: Name
    constraint: str
    no_inherit: bool = False

    @field_validator("constraint")
    @classmethod
    def _expression(cls, value: str) -> str:
        return check_expression(value)


class ForeignKeyReference(Fields):
    name: Name
    table: Name
    column: Name
    on_delete: ForeignKeyAction = "NO ACTION"
    on_update: ForeignKeyAction = "NO ACTION"
    match_type: MatchType = "SIMPLE"
    deferrable: bool = False
    initially_deferred: bool = False


class TableForeignKeyReference(Fields):
    table: Name
    columns: tuple[Name, ...] = Field(min_length=1)
    on_delete: ForeignKeyAction = "NO ACTION"
    on_update: ForeignKeyAction = "NO ACTION"
    match_type: MatchType = "SIMPLE"
    on_delete_set_columns: tuple[Name, ...] = ()


class Identity(Fields):
    user_specified_values: Literal["ALWAYS", "BY DEFAULT"] = "ALWAYS"
    sequence_options: str = ""


class Generated(Fields):
    expression: str = ""
    identity: Identity | None = None


class Column(Fields):
    """A column of ``create_table`` and ``add_column``."""

    name: Name
    type: str
    nullable: bool = False
    unique: bool = False
    pk: bool = False
    default: str | None = None
    comment: str | None = None
    check: CheckConstraint | None = None
    references: ForeignKeyReference | None = None
    generated: Generated | None = None

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        return check_type(value)

    @field_validator("default")
    @classmethod
    def _default(cls, value: str | None) -> str | None:
        return None if value is None else check_expression(value)


class IndexParameters(Fields):
    tablespace: str = ""
    storage_parameters: str = ""
    include_columns: tuple[Name, ...] = ()


class Exclude(Fields):
    index_method: str = ""
    elements: str = ""
    predicate: str = ""


class Constraint(Fields):
    """A table constraint of ``create_table``."""

    name: Name
    type: Literal["unique", "check", "primary_key", "foreign_key", "exclude"]
    columns: tuple[Name, ...] = ()
    check: str = ""
    nulls_not_distinct: bool = False
    deferrable: bool = False
    initially_deferred: bool = False
    no_inherit: bool = False
    references: TableForeignKeyReference | None = None
    index_parameters: IndexParameters | None = None
    exclude: Exclude | None = None

    @field_validator("check")
    @classmethod
    def _check(cls, value: str) -> str:
        return check_expression(value) if value else value


class OpClass(Fields):
    name: str = ""
    params: tuple[str, ...] = ()


class IndexField(Fields):
    """One element of ``create_index.columns``."""

    column: Name
    collate: str = ""
    sort: Literal["ASC", "DESC", ""] = ""
    nulls: Literal["FIRST", "LAST"] | None = None
    opclass: OpClass | None = None
