"""``set_replica_identity``: pgroll's ``ALTER TABLE ... REPLICA IDENTITY``, applied to the table in the
expand (both versions share it: it only decides what logical decoding logs for old rows), put back by a
rollback from the identity the catalog had, and nothing left for the contract."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import model_validator

from airflow_provider_expand.engine.operations import errors
from airflow_provider_expand.engine.operations.base import Fields, Operation
from airflow_provider_expand.engine.operations.plan import Group, ident, transaction
from airflow_provider_expand.engine.operations.schema import Schema

_KEYWORD = {
    "full": "FULL",
    "default": "DEFAULT",
    "nothing": "NOTHING",
    "f": "FULL",
    "d": "DEFAULT",
    "n": "NOTHING",
}


class ReplicaIdentity(Fields):
    type: Literal["full", "default", "nothing", "index"]
    index: str = ""

    @model_validator(mode="after")
    def _index(self) -> ReplicaIdentity:
        if (self.type == "index") != bool(self.index):
            raise ValueError("index: required with type index, and only with it")
        return self


class SetReplicaIdentityFields(Fields):
    table: str
    identity: ReplicaIdentity


class SetReplicaIdentity(Operation[SetReplicaIdentityFields]):
    name = "set_replica_identity"
    fields_model = SetReplicaIdentityFields
    statement = ""
    undo = ""

    def check(self, schema: Schema) -> None:
        f = self.fields
        table = self.need_table(schema, f.table, "table")
        qualified = self.ctx.table(table.physical)
        if table.replica_identity == "i":
            raise self.fail(
                errors.UnsupportedError,
                "table",
                f"table {table.name!r} has REPLICA IDENTITY USING INDEX already, which the schema model does "
                "not record the index of, so a rollback could not put it back; use a sql operation",
                table=table.name,
            )
        identity = f.identity
        if identity.type == "index":
            index = table.indexes.get(identity.index)
            if index is None:
                raise self.fail(
                    errors.IndexNotFoundError,
                    "identity.index",
                    f"table {table.name!r} has no index {identity.index!r} (indexes: "
                    f"{', '.join(sorted(table.indexes)) or 'none'})",
                    table=table.name,
                )
            if not index.unique or not index.valid:
                raise self.fail(
                    errors.OperationError,
                    "identity.index",
                    f"index {identity.index!r} must be a valid unique index to be a replica identity",
                    table=table.name,
                )
            self.statement = f"ALTER TABLE {qualified} REPLICA IDENTITY USING INDEX {ident(identity.index)}"
        else:
            self.statement = f"ALTER TABLE {qualified} REPLICA IDENTITY {_KEYWORD[identity.type]}"
        self.undo = f"ALTER TABLE {qualified} REPLICA IDENTITY {_KEYWORD[table.replica_identity]}"
        table.replica_identity = identity.type[0] if identity.type != "index" else "i"

    def expand(self) -> Sequence[Group]:
        return [transaction(self.statement, label=self.label)]

    def contract(self) -> Sequence[Group]:
        return []

    def rollback(self) -> Sequence[Group]:
        return [transaction(self.undo, label=self.label)]

    def tables(self) -> tuple[str, ...]:
        return (self.fields.table,)


OPERATION = SetReplicaIdentity
