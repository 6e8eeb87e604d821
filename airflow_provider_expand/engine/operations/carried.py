"""The old column's constraints and indexes as the catalog prints them, parsed with pglast so that the
duplicated column can get the same ones (:mod:`.duplicate`)."""

from __future__ import annotations

from collections.abc import Mapping

from pglast import ast, parse_sql
from pglast.enums import SortByDir, SortByNulls
from pglast.stream import RawStream

from airflow_provider_expand.engine.operations.plan import ident
from airflow_provider_expand.engine.operations.schema import Constraint
from airflow_provider_expand.engine.statements import _walk


def constraint_statement(
    qualified: str, name: str, definition: str
) -> tuple[ast.AlterTableStmt, ast.Constraint]:
    statement = parse_sql(f"ALTER TABLE {qualified} ADD CONSTRAINT {ident(name)} {definition}")[0].stmt
    assert isinstance(statement, ast.AlterTableStmt) and statement.cmds
    command = statement.cmds[0]
    assert isinstance(command, ast.AlterTableCmd) and isinstance(command.def_, ast.Constraint)
    return statement, command.def_


def constraint_keys(node: ast.Constraint) -> list[str]:
    return [str(k.sval) for k in node.keys or () if isinstance(k, ast.String)]


def rename_in_constraint(node: ast.Constraint, renames: Mapping[str, str]) -> None:
    """Point a parsed CHECK / UNIQUE / FOREIGN KEY of the old columns at the new ones."""
    for ref in _walk(node.raw_expr):
        if isinstance(ref, ast.ColumnRef) and ref.fields and len(ref.fields) == 1:
            name = ref.fields[0]
            if isinstance(name, ast.String) and str(name.sval) in renames:
                ref.fields = (ast.String(sval=renames[str(name.sval)]),)
    if node.fk_attrs:
        node.fk_attrs = tuple(ast.String(sval=renames.get(str(a.sval), str(a.sval))) for a in node.fk_attrs)


def references(con: Constraint, table: str, columns: set[str]) -> bool:
    """Whether foreign key ``con`` points at one of ``columns`` of ``table``."""
    statement = parse_sql(f"ALTER TABLE t ADD CONSTRAINT c {con.definition}")[0].stmt
    assert isinstance(statement, ast.AlterTableStmt) and statement.cmds
    command = statement.cmds[0]
    assert isinstance(command, ast.AlterTableCmd) and isinstance(command.def_, ast.Constraint)
    node = command.def_
    if node.pktable is None or node.pktable.relname != table:
        return False
    return any(str(a.sval) in columns for a in node.pk_attrs or ())


def plain_index(definition: str) -> tuple[list[str], str | None, str | None] | None:
    """``pg_get_indexdef`` of an index on plain columns -> (columns, predicate, method); None for anything
    else (expressions, opclasses, collations, orderings, INCLUDE), which a copy could not reproduce."""
    node = parse_sql(definition)[0].stmt
    assert isinstance(node, ast.IndexStmt)
    params = node.indexParams or ()
    plain = all(
        isinstance(p, ast.IndexElem)
        and p.name
        and not p.expr
        and not p.collation
        and not p.opclass
        and p.ordering in (None, SortByDir.SORTBY_DEFAULT)
        and p.nulls_ordering in (None, SortByNulls.SORTBY_NULLS_DEFAULT)
        for p in params
    )
    if not plain or node.indexIncludingParams:
        return None
    names = [str(p.name) for p in params if isinstance(p, ast.IndexElem)]
    predicate = RawStream()(node.whereClause) if node.whereClause is not None else None
    return names, predicate, str(node.accessMethod) if node.accessMethod else None
