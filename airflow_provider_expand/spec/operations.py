"""``operations:`` in migration.yaml: pgroll's operation list, each entry one key (the operation's name)
holding its fields. The entry model has one optional field per name of pgroll's vocabulary, typed by the
operation's own fields model, so pydantic's errors already read ``operations[2].add_column.column.type``
and an unknown name gets the loader's "did you mean" suggestion.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from airflow_provider_expand.engine.operations.base import Fields
from airflow_provider_expand.engine.operations.registry import UnknownOperationError, names, operation_class


class NotImplementedFields(BaseModel):
    """Stands in for an operation of pgroll's vocabulary whose module this version lacks."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _refuse(cls, value: Any) -> Any:
        raise ValueError("this operation is not implemented in this version of airflow-provider-expand")


class _EntryBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _one_key(cls, value: Any) -> Any:
        if not isinstance(value, dict) or len(value) != 1:
            shown = ", ".join(map(str, value)) if isinstance(value, dict) else type(value).__name__
            raise ValueError(
                f"each operation is a mapping with exactly one key, the operation's name (got: {shown or 'none'})"
            )
        return value

    def entry(self) -> tuple[str, Fields]:
        """(pgroll name, fields) of the one operation this entry holds."""
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is not None:
                return name, value
        raise AssertionError("validated entries hold one operation")


@cache
def entry_model() -> type[_EntryBase]:
    """The model of one ``operations`` entry (built once: it imports every operation module)."""
    fields: dict[str, Any] = {}
    for name in names():
        try:
            model: type[BaseModel] = operation_class(name).fields_model
        except UnknownOperationError:
            model = NotImplementedFields
        fields[name] = (model | None, Field(default=None))
    return create_model("OperationEntry", __base__=_EntryBase, **fields)


def parse_operations(raw: Any) -> list[tuple[str, Fields]]:
    """Validate a raw ``operations`` list (a pgroll file's) outside a migration.yaml; pydantic errors as is."""
    model = entry_model()
    return [model.model_validate(item).entry() for item in raw]
