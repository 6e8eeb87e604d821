"""A phase's SQL file as a list of statements, split and classified by PostgreSQL's own parser (pglast).

Regex splitting breaks on dollar-quoted function bodies and comments; pglast does not. The DDL runner
uses the classification to run ``CONCURRENTLY`` statements outside a transaction, the linter to check
each statement against its phase.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pglast
from pglast import ast
from pglast.enums import AlterTableType
from pglast.parser import ParseError
from pglast.visitors import Visitor


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
        # args[1] is the byte offset of the error; count lines on the bytes before it.
        location = int(exc.args[1]) if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
        line = text.encode("utf-8")[:location].count(b"\n") + 1
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
