"""SQL parsed by PostgreSQL's own parser (pglast): a phase's SQL file as a list of classified statements,
and the fragments a spec pastes into statements (a backfill's ``set`` and ``where``, an index predicate).

Regex splitting breaks on dollar-quoted function bodies and comments; pglast does not. The DDL runner
uses the classification to run ``CONCURRENTLY`` statements outside a transaction, the linter to check
each statement against its phase. A fragment is checked by :func:`parse_fragment` and its shape by
:func:`parse_assignments` / :func:`parse_predicate`, the one validator the spec loader, the backfill
and the index builder share.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pglast
from pglast import ast
from pglast.enums import AlterTableType, SetOperation
from pglast.parser import ParseError
from pglast.visitors import Visitor
from psycopg import sql


class SQLFileError(ValueError):
    """A SQL file that cannot be run as a phase: says which file and line."""

    def __init__(self, source: str, line: int, message: str) -> None:
        super().__init__(f"{source}:{line}: {message}")
        self.source = source
        self.line = line
        self.message = message


@dataclass(frozen=True)
class Statement:
    """One statement of a SQL file, with where it starts and its parse tree."""

    sql: str
    line: int
    node: ast.Node
    source: str = "<sql>"

    @property
    def kind(self) -> str:
        """The parse node's name, e.g. ``AlterTableStmt``."""
        return type(self.node).__name__

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    @property
    def concurrently(self) -> bool:
        """True for the statements PostgreSQL refuses inside a transaction block."""
        return needs_autocommit(self.node)


def needs_autocommit(node: ast.Node) -> bool:
    """Whether ``node`` cannot run inside a transaction block (``CONCURRENTLY``, ``VACUUM``, ...)."""
    if isinstance(node, ast.IndexStmt | ast.DropStmt):
        return bool(node.concurrent)
    if isinstance(node, ast.ReindexStmt):
        return any(isinstance(p, ast.DefElem) and p.defname == "concurrently" for p in node.params or ())
    if isinstance(node, ast.AlterTableStmt):
        for cmd in node.cmds or ():
            if (
                isinstance(cmd, ast.AlterTableCmd)
                and cmd.subtype == AlterTableType.AT_DetachPartition
                and isinstance(cmd.def_, ast.PartitionCmd)
                and cmd.def_.concurrent
            ):
                return True
        return False
    return isinstance(node, ast.VacuumStmt | ast.CreatedbStmt | ast.DropdbStmt | ast.AlterSystemStmt)


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, max(offset, 0)) + 1


def _first_code_offset(text: str, start: int) -> int:
    """Skip whitespace and comments pglast leaves before a statement, so its line is the code's line."""
    i = start
    while i < len(text):
        if text[i].isspace():
            i += 1
        elif text.startswith("--", i):
            nl = text.find("\n", i)
            i = len(text) if nl < 0 else nl + 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = len(text) if end < 0 else end + 2
        else:
            break
    return i


def parse_statements(text: str, source: str = "<sql>") -> list[Statement]:
    """Split ``text`` into statements; a syntax error raises :class:`SQLFileError` at its line."""
    try:
        parsed = pglast.parse_sql(text)
    except ParseError as exc:
        # args[1] is where the error is, in characters of ``text`` (pglast converts the server's byte
        # offset), like every location pglast reports: count lines on the text, not on its UTF-8 bytes.
        location = int(exc.args[1]) if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
        line = _line_of(text, location)
        raise SQLFileError(source, line, f"does not parse: {exc.args[0]}") from exc
    statements: list[Statement] = []
    for raw in parsed:
        if raw.stmt is None:
            continue
        start = _first_code_offset(text, raw.stmt_location or 0)
        end = (raw.stmt_location or 0) + raw.stmt_len if raw.stmt_len else len(text)
        body = text[start:end].strip().rstrip(";").strip()
        statements.append(Statement(sql=body, line=_line_of(text, start), node=raw.stmt, source=source))
    return statements


def load_statements(path: Path) -> list[Statement]:
    """Read and split a SQL file; errors name the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SQLFileError(str(path), 0, f"cannot be read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise SQLFileError(str(path), 0, f"is not UTF-8: {exc}") from exc
    return parse_statements(text, source=path.name)


class _RelationCollector(Visitor):
    def __init__(self) -> None:
        self.names: list[str] = []

    def visit_RangeVar(self, ancestors: object, node: ast.RangeVar) -> None:
        name = f"{node.schemaname}.{node.relname}" if node.schemaname else str(node.relname)
        if name not in self.names:
            self.names.append(name)


def relations(statements: Sequence[Statement]) -> list[str]:
    """Every table a phase names, in order of first mention: what its automatic checks look at."""
    collector = _RelationCollector()
    for statement in statements:
        collector(statement.node)
    return collector.names


FragmentRule = Literal["syntax", "several", "shape", "clauses", "subquery", "duplicate"]
_PREDICATE_FIELDS = {"targetList", "whereClause", "op", "all", "groupDistinct", "limitOption"}
ASSIGNMENTS_TABLE = "_expand_backfill_target"  # the placeholder a ``set`` list is parsed against


class FragmentError(ValueError):
    """A SQL fragment that is not the one piece of SQL its place needs; ``rule`` says which rule it broke,
    so each caller words it for its own field."""

    def __init__(self, rule: FragmentRule, message: str) -> None:
        super().__init__(message)
        self.rule = rule


def parse_fragment(text: str) -> ast.Node | None:
    """``text`` (a fragment already set in its statement) parsed: its one statement, or None when it parses
    to several (a ``;``) or none. A syntax error raises :class:`FragmentError` (``does not parse: ...``)."""
    try:
        parsed = pglast.parse_sql(text)
    except ParseError as exc:
        raise FragmentError("syntax", f"does not parse: {exc.args[0]}") from exc
    return parsed[0].stmt if len(parsed) == 1 else None


def parse_assignments(text: str) -> ast.UpdateStmt:
    """``text`` as the ``SET`` list of one plain ``UPDATE`` (no ``WHERE``, ``FROM`` or ``RETURNING``), each
    column assigned once."""
    node = parse_fragment(f"UPDATE {ASSIGNMENTS_TABLE} SET {text}")
    if not isinstance(node, ast.UpdateStmt):
        raise FragmentError("several", "must be assignments of one UPDATE, no ';'")
    if node.whereClause or node.fromClause or node.returningClause:
        raise FragmentError("clauses", "must be assignments only; put conditions in where")
    seen: set[str] = set()
    for target in node.targetList or ():
        if target.name in seen:  # PostgreSQL refuses it only when the UPDATE runs (lint EX306)
            raise FragmentError("duplicate", f"assigns {target.name} more than once")
        seen.add(str(target.name))
    return node


def parse_predicate(text: str, *, subqueries: bool = True) -> ast.Node:
    """``text`` as exactly one boolean expression (``SELECT 1 WHERE <text>`` and no other clause, no
    set operation), so it can never smuggle SQL into the statement it is pasted into; an index predicate
    also refuses subqueries (``subqueries=False``). Returns the expression's node."""
    node = parse_fragment(f"SELECT 1 WHERE {text}")
    if node is None:
        raise FragmentError("several", "must be one predicate, not several statements")
    if not isinstance(node, ast.SelectStmt) or node.whereClause is None:
        raise FragmentError("shape", "must be one predicate, not several statements")
    extra = [f for f in node if f not in _PREDICATE_FIELDS and getattr(node, f)]
    if extra or node.op != SetOperation.SETOP_NONE:
        raise FragmentError("clauses", "must be a predicate only, without other clauses")
    if not subqueries and any(isinstance(n, ast.SubLink) for n in _walk(node.whereClause)):
        raise FragmentError("subquery", "an index predicate cannot contain a subquery")
    return node.whereClause


def _walk(node: Any) -> Iterator[ast.Node]:
    if isinstance(node, ast.Node):
        yield node
        for name in node:
            yield from _walk(getattr(node, name))
    elif isinstance(node, tuple | list):
        for item in node:
            yield from _walk(item)


def table_identifier(name: str) -> sql.Identifier:
    """``table`` / ``schema.table`` exactly as written (the spec allows plain identifiers only), as one
    quoted identifier: what the index builder and the checks name their table with."""
    return sql.Identifier(*name.split("."))


def parse_table(text: str) -> tuple[str | None, str]:
    """``products`` / ``shop.products`` / ``"Odd Name"`` -> (schema or None, name), via the real parser,
    so unquoted names fold to lower case as PostgreSQL folds them (the backfill's resolution)."""
    node = parse_fragment(f"SELECT FROM {text}")
    sources = node.fromClause if isinstance(node, ast.SelectStmt) and node.whereClause is None else None
    rel = sources[0] if sources and len(sources) == 1 else None
    if (
        not isinstance(rel, ast.RangeVar)
        or rel.alias is not None
        or rel.catalogname
        or not rel.inh
        or not rel.relname
    ):
        raise FragmentError("shape", f"{text!r} must be a table name, optionally schema-qualified")
    return rel.schemaname, str(rel.relname)
