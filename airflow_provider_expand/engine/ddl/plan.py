"""How a phase's statements are grouped into commits, and how a resumed try knows what is already applied.

Contiguous ordinary statements share one transaction; each ``CONCURRENTLY`` statement (or anything else
PostgreSQL refuses in a transaction block) is a group of its own, run in autocommit. The ledger
checkpoint of a phase is ``"<groups done>:<digest>"``; the digest covers those groups' statements as the
parser sees them (comments and layout do not count), so a resume refuses a file whose applied part changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from pglast import ast
from pglast.stream import RawStream

from airflow_provider_expand.engine.errors import DefinitiveError
from airflow_provider_expand.engine.statements import SQLFileError, Statement


class PhaseFileChangedError(DefinitiveError):
    """The statements an earlier try already applied differ from the file now: resuming would be a guess."""


@dataclass(frozen=True)
class Group:
    """Statements that commit together: a transaction, or one autocommit statement."""

    number: int
    statements: tuple[Statement, ...]
    autocommit: bool

    @property
    def mode(self) -> str:
        return "autocommit" if self.autocommit else f"transaction group {self.number}"


@dataclass(frozen=True)
class Plan:
    """The groups of a phase and the digest of every prefix of them (``digests[k]``: groups 1..k)."""

    groups: tuple[Group, ...]
    digests: tuple[str, ...]

    @property
    def statements(self) -> tuple[Statement, ...]:
        return tuple(s for g in self.groups for s in g.statements)

    @property
    def statement_count(self) -> int:
        return len(self.statements)

    def checkpoint_key(self, done: int) -> str:
        """The ledger's ``last_key`` once groups 1..``done`` are applied."""
        return f"{done}:{self.digests[done]}"

    def resume_point(self, last_key: str | None) -> int:
        """How many groups an earlier try applied, checked against the file as it is now."""
        done, digest = _parse_checkpoint(last_key)
        if done == 0:
            return 0
        if done > len(self.groups) or digest != self.digests[done]:
            applied = [s for g in self.groups[:done] for s in g.statements] or list(self.statements)
            span = f"{applied[0].where}-{applied[-1].line}" if applied else "the file"
            raise PhaseFileChangedError(
                f"{span}: the ledger says an earlier try applied {done} group(s) of this phase, but the "
                "statements here differ from what it applied; restore them (fix only what comes after "
                "them), or reset the migration's ledger if the schema was repaired by hand"
            )
        return done


def plan_phase(statements: Sequence[Statement]) -> Plan:
    """Group ``statements``; a transaction-control statement is an error, since the runner owns transactions."""
    for stmt in statements:
        if isinstance(stmt.node, ast.TransactionStmt):
            raise SQLFileError(
                stmt.source,
                stmt.line,
                f"transaction control ({stmt.sql.split()[0].upper()}) is not allowed: the runner runs "
                "each group of statements in its own transaction and CONCURRENTLY statements in autocommit",
            )
    groups: list[Group] = []
    pending: list[Statement] = []
    for stmt in statements:
        if stmt.concurrently:
            if pending:
                groups.append(Group(len(groups) + 1, tuple(pending), autocommit=False))
                pending = []
            groups.append(Group(len(groups) + 1, (stmt,), autocommit=True))
        else:
            pending.append(stmt)
    if pending:
        groups.append(Group(len(groups) + 1, tuple(pending), autocommit=False))
    return Plan(tuple(groups), tuple(_digests(groups)))


def plan_groups(groups: Sequence[tuple[Sequence[Statement], bool]]) -> Plan:
    """A plan whose transaction boundaries are given (``(statements, autocommit)`` per group), as the
    declarative operations plan them; an autocommit group holds one statement, and a statement PostgreSQL
    refuses in a transaction block must be in one."""
    built: list[Group] = []
    for statements, alone in groups:
        for stmt in statements:
            if isinstance(stmt.node, ast.TransactionStmt):
                raise SQLFileError(stmt.source, stmt.line, "transaction control is not allowed in a group")
            if stmt.concurrently and not alone:
                raise SQLFileError(
                    stmt.source, stmt.line, "runs outside a transaction: it needs its own group"
                )
        if alone and len(statements) != 1:
            raise ValueError("an autocommit group holds exactly one statement")
        if statements:
            built.append(Group(len(built) + 1, tuple(statements), autocommit=alone))
    return Plan(tuple(built), tuple(_digests(built)))


def _canonical(stmt: Statement) -> str:
    """The statement as the parser sees it: comments and layout do not count as a change."""
    try:
        return str(RawStream()(stmt.node))
    except Exception:  # a node the deparser lacks: fall back to the text
        return stmt.sql


def _digests(groups: Sequence[Group]) -> list[str]:
    out = [hashlib.sha256(b"").hexdigest()[:16]]
    for group in groups:
        h = hashlib.sha256(out[-1].encode())
        for stmt in group.statements:
            h.update(b"\x00" + _canonical(stmt).encode())
        out.append(h.hexdigest()[:16])
    return out


def _parse_checkpoint(last_key: str | None) -> tuple[int, str | None]:
    if not last_key or ":" not in last_key:
        return 0, None
    count, digest = last_key.split(":", 1)
    return (int(count), digest) if count.isdigit() else (0, None)
