"""Carrying the old columns' constraints and indexes over to their copies (part of :mod:`.duplicate`).

A column that is replaced by a copy must not lose what guarded it: its CHECK and FOREIGN KEY constraints
are recreated on the copy ``NOT VALID`` (validated in the contract), its UNIQUE constraints and plain
indexes are built on the copy ``CONCURRENTLY`` in the expand, all under temporary names that the contract
gives back once the old column is gone. What cannot be carried safely is refused, naming it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pglast.stream import RawStream

from airflow_provider_expand.engine.operations import carried, errors
from airflow_provider_expand.engine.operations.base import Operation
from airflow_provider_expand.engine.operations.plan import ident
from airflow_provider_expand.engine.operations.schema import Index, Schema, Table
from airflow_provider_expand.engine.operations.triggers import bounded_name, parse_expression, rename_columns

if TYPE_CHECKING:
    from airflow_provider_expand.engine.operations.duplicate import _Column

ALLOW_RENAME = (
    "-- expand: allow EX102 because the copy on the new column takes back the name of the one dropped with "
    "the old column; queries do not name constraints or indexes"
)


class Carrying:
    """The carrying half of :class:`~.duplicate.Duplication`, which holds the state declared here."""

    op: Operation[Any]
    table: Table
    columns: list[_Column]
    expand_sql: list[str]
    validations: list[str]
    unique: list[tuple[str, str]]
    renames: list[str]
    expand_indexes: list[str]

    def _carry(
        self, schema: Schema, before: Table, renames: Mapping[str, str], dropped: frozenset[str]
    ) -> None:
        """Recreate on the new columns every constraint and index of the old ones (except ``dropped``)."""
        op, qualified = self.op, self.op.ctx.table(before.physical)
        moved = set(renames)
        for other in schema.tables.values():  # a foreign key into a moved column would block its drop
            for con in other.constraints.values():
                if con.type == "f" and carried.references(con, before.physical, moved):
                    raise op.fail(
                        errors.UnsupportedError,
                        "column",
                        f"foreign key {con.name!r} of table {other.name!r} references a column this operation "
                        f"replaces in table {before.name!r}; drop it first (drop_constraint) and recreate it after",
                        table=before.name,
                    )
        for con in before.constraints.values():
            if con.name in dropped or not moved & set(con.columns):
                continue
            if con.type not in ("c", "f", "u"):
                raise op.fail(
                    errors.UnsupportedError,
                    "column",
                    f"constraint {con.name!r} ({con.definition}) covers a column this operation replaces in "
                    f"table {before.name!r}; only CHECK, UNIQUE and FOREIGN KEY constraints can be carried over",
                    table=before.name,
                )
            retyped = [c.old.name for c in self.columns if c.type and c.old.physical in con.columns]
            if con.type == "c" and retyped:
                raise op.fail(
                    errors.UnsupportedError,
                    "type",
                    f"check constraint {con.name!r} ({con.definition}) covers column {retyped[0]!r} of table "
                    f"{before.name!r}, whose type changes, so it may not hold for the new type; drop it first "
                    "(drop_constraint) and create it for the new type after (create_constraint)",
                    table=before.name,
                    column=retyped[0],
                )
            temporary = bounded_name("c", con.name)
            statement, node = carried.constraint_statement(qualified, temporary, con.definition)
            carried.rename_in_constraint(node, renames)
            if con.type == "u":
                index_name = bounded_name("u", con.name)
                self._expand_index(
                    index_name, [renames.get(k, k) for k in carried.constraint_keys(node)], unique=True
                )
                self.unique.append((con.name, index_name))
                continue
            node.skip_validation, node.initially_valid = True, False
            self.expand_sql.append(RawStream()(statement))
            if con.validated:  # a constraint that was NOT VALID stays so
                self.validations.append(temporary)
            self.renames.append(
                f"{ALLOW_RENAME}\nALTER TABLE {qualified} RENAME CONSTRAINT {ident(temporary)} TO {ident(con.name)}"
            )
        for index in before.indexes.values():
            if index.constraint is not None or not moved & set(index.columns):
                continue
            self._carry_index(before, index, renames)

    def _carry_index(self, before: Table, index: Index, renames: Mapping[str, str]) -> None:
        plain = carried.plain_index(index.definition)
        if plain is None:
            raise self.op.fail(
                errors.UnsupportedError,
                "column",
                f"index {index.name!r} ({index.definition}) covers a column this operation replaces in table "
                f"{before.name!r} and is not a plain column index; drop it first (drop_index) and recreate it "
                "after (create_index)",
                table=before.name,
            )
        names, predicate, using = plain
        where = rename_columns(parse_expression(predicate), renames).text if predicate else None
        temporary = bounded_name("i", index.name)
        columns = [renames.get(n, n) for n in names]
        self._expand_index(temporary, columns, unique=index.unique, where=where, using=using)
        self.renames.append(
            f"{ALLOW_RENAME}\nALTER INDEX {ident(self.op.ctx.schema, temporary)} RENAME TO {ident(index.name)}"
        )

    def _expand_index(
        self,
        name: str,
        columns: Sequence[str],
        *,
        unique: bool,
        where: str | None = None,
        using: str | None = None,
    ) -> None:
        """A carried index, built in the expand (its name depends on the catalog, so it cannot be a static
        index task), so new code has it during the soak; dropped with the new column by a rollback."""
        kind = "UNIQUE INDEX" if unique else "INDEX"
        method = f" USING {ident(using)}" if using else ""
        predicate = f" WHERE {where}" if where else ""
        self.expand_indexes.append(
            f"CREATE {kind} CONCURRENTLY IF NOT EXISTS {ident(name)} ON {self.op.ctx.table(self.table.physical)}"
            f"{method} ({', '.join(ident(c) for c in columns)}){predicate}"
        )
