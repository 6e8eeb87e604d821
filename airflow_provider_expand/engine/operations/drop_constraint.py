"""``drop_constraint``: pgroll's (deprecated) drop of a single-column CHECK, UNIQUE or FOREIGN KEY, with one
``up`` and one ``down``; the same copy as :mod:`.drop_multicolumn_constraint`, which covers several columns.
"""

from __future__ import annotations

from pydantic import field_validator

from airflow_provider_expand.engine.operations import errors
from airflow_provider_expand.engine.operations.base import Fields
from airflow_provider_expand.engine.operations.drop_multicolumn_constraint import DroppingConstraint
from airflow_provider_expand.engine.operations.duplicate import Shape
from airflow_provider_expand.engine.operations.fields import check_expression
from airflow_provider_expand.engine.operations.schema import Schema


class DropConstraintFields(Fields):
    table: str
    name: str
    up: str | None = None
    down: str

    @field_validator("up", "down")
    @classmethod
    def _expression(cls, value: str | None) -> str | None:
        return None if value is None else check_expression(value)


class DropConstraint(DroppingConstraint):
    name = "drop_constraint"
    fields_model = DropConstraintFields

    def check(self, schema: Schema) -> None:
        f = self.fields
        assert isinstance(f, DropConstraintFields)
        table, con, columns = self.find(schema)
        if len(columns) != 1:
            raise self.fail(
                errors.OperationError,
                "name",
                f"constraint {con.name!r} of table {table.name!r} covers {len(columns)} columns "
                f"({', '.join(columns)}); use drop_multicolumn_constraint, with up/down per column",
                table=table.name,
            )
        self.plan_drop(schema, table, con, [Shape(column=columns[0], up=f.up, down=f.down)])


OPERATION = DropConstraint
