"""An operation whose every phase is its column copy's (:class:`Duplication`): the constraint operations,
which change no column themselves but copy the columns a constraint covers."""

from __future__ import annotations

from collections.abc import Sequence

from airflow_provider_expand.engine.operations.base import F, Operation
from airflow_provider_expand.engine.operations.duplicate import Duplication
from airflow_provider_expand.engine.operations.plan import Backfill, Group, IndexBuild


class DuplicatedColumns(Operation[F]):
    """``validate`` sets :attr:`duplication`; expand, backfill, indexes, contract and rollback are its."""

    duplication: Duplication | None = None

    def _plan(self) -> Duplication:
        assert self.duplication is not None, "validate() first"
        return self.duplication

    def expand(self) -> Sequence[Group]:
        return self._plan().expand()

    def backfills(self) -> Sequence[Backfill]:
        return self._plan().backfills()

    def indexes(self) -> Sequence[IndexBuild]:
        return self._plan().indexes()

    def contract(self) -> Sequence[Group]:
        return self._plan().contract()

    def rollback(self) -> Sequence[Group]:
        return self._plan().rollback()
