"""Up/down triggers: the writes of one code version reach the columns only the other version sees.

``up`` fires for old code's writes (the session's first schema on ``search_path`` is not the migration's
version schema) and computes the new column from the old ones; ``down`` fires for the new code's writes
(through the views, ``search_path`` = the version schema) and computes the old column from the new ones.
A write fires exactly one direction, and a trigger only assigns ``NEW``, so neither recurses. The
expression sees the row's columns as PL/pgSQL variables named as ``variables`` says.

The opsalter branch owns this module (alter_column's two directions); keep :func:`column_trigger`'s
signature, which add_column and drop_column call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from airflow_provider_expand.engine.operations.base import PlanContext
from airflow_provider_expand.engine.operations.plan import ident, literal

Direction = Literal["up", "down"]
MAX_IDENTIFIER = 63


@dataclass(frozen=True)
class TriggerSQL:
    """The statements that create a trigger and its function (one transaction group), and drop them."""

    name: str
    create: tuple[str, ...]
    drop: tuple[str, ...]


def trigger_name(direction: Direction, table: str, column: str) -> str:
    """``_expand_up_<table>_<column>``, or a digest of it when that is longer than PostgreSQL keeps."""
    name = f"_expand_{direction}_{table}_{column}"
    if len(name.encode()) <= MAX_IDENTIFIER:
        return name
    return f"_expand_{direction}_{hashlib.sha256(f'{table}.{column}'.encode()).hexdigest()[:16]}"


def new_code_test(ctx: PlanContext) -> str:
    """The PL/pgSQL condition that is true in a session of the new code (``search_path`` = version schema)."""
    return f"(current_schemas(false))[1] IS NOT DISTINCT FROM {literal(ctx.version_schema)}"


def column_trigger(
    ctx: PlanContext,
    *,
    table: str,
    column: str,
    expression: str,
    direction: Direction,
    variables: Mapping[str, str],
) -> TriggerSQL:
    """A ``BEFORE INSERT OR UPDATE`` row trigger on ``table`` (physical, in ``ctx.schema``) that sets
    ``column`` (physical) to ``expression`` for the writes of one code version.

    ``variables`` maps each name ``expression`` may use to the physical column it reads (``NEW.<physical>``).
    """
    name = trigger_name(direction, table, column)
    qualified_table = ctx.table(table)
    function = ident(ctx.schema, name)
    tag = "$expand_" + hashlib.sha256(expression.encode()).hexdigest()[:8] + "$"
    declare = "".join(
        f"  {ident(var)} {qualified_table}.{ident(physical)}%TYPE := NEW.{ident(physical)};\n"
        for var, physical in variables.items()
    )
    test = new_code_test(ctx)
    condition = test if direction == "down" else f"NOT ({test})"
    body = (
        f"DECLARE\n{declare}BEGIN\n"
        f"  IF {condition} THEN\n"
        f"    NEW.{ident(column)} := ({expression});\n"
        "  END IF;\n"
        "  RETURN NEW;\n"
        "END\n"
    )
    create = (
        f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS {tag}\n{body}{tag}",
        f"CREATE TRIGGER {ident(name)} BEFORE INSERT OR UPDATE ON {qualified_table} "
        f"FOR EACH ROW EXECUTE FUNCTION {function}()",
    )
    drop = (
        f"DROP TRIGGER IF EXISTS {ident(name)} ON {qualified_table}",
        f"DROP FUNCTION IF EXISTS {function}()",
    )
    return TriggerSQL(name, create, drop)
