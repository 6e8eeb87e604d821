"""What the linter knows at a statement: the phase, and what earlier statements of the file (or of
expand.sql, for contract and rollback) created, dropped, validated or opened, and what the current
transaction group holds. Rules read it; only the linter advances it, after every rule has seen the
statement. The net effect of a file on named objects (created, removed) is what the phase rules compare
across files: what rollback must undo, what contract must keep.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pglast import ast
from pglast.enums import (
    AlterTableType,
    BoolExprType,
    ConstrType,
    DropBehavior,
    NullTestType,
    ObjectType,
    TransactionStmtKind,
)
from pglast.visitors import Visitor

from airflow_provider_expand.engine.lint.findings import Phase
from airflow_provider_expand.engine.statements import Statement

if TYPE_CHECKING:
    from airflow_provider_expand.engine.lint.live import LiveSchema

ObjectKey = tuple[str, str]
"""``(kind, name)``: ``("relation", "products")``, ``("column", "products.name")``, ``("index", ...)``."""

_DROP_KINDS: dict[ObjectType, str] = {
    ObjectType.OBJECT_TABLE: "relation",
    ObjectType.OBJECT_VIEW: "relation",
    ObjectType.OBJECT_MATVIEW: "relation",
    ObjectType.OBJECT_SEQUENCE: "relation",
    ObjectType.OBJECT_FOREIGN_TABLE: "relation",
    ObjectType.OBJECT_INDEX: "index",
    ObjectType.OBJECT_FUNCTION: "function",
    ObjectType.OBJECT_PROCEDURE: "function",
    ObjectType.OBJECT_ROUTINE: "function",
    ObjectType.OBJECT_TRIGGER: "trigger",
    ObjectType.OBJECT_POLICY: "policy",
    ObjectType.OBJECT_TYPE: "type",
    ObjectType.OBJECT_DOMAIN: "type",
    ObjectType.OBJECT_EXTENSION: "extension",
    ObjectType.OBJECT_SCHEMA: "schema",
}


_RENAME_KINDS: dict[ObjectType, str] = {
    **{k: v for k, v in _DROP_KINDS.items() if v in ("relation", "index", "function", "type")},
    ObjectType.OBJECT_COLUMN: "column",
    ObjectType.OBJECT_TABCONSTRAINT: "constraint",
    ObjectType.OBJECT_TRIGGER: "trigger",
    ObjectType.OBJECT_POLICY: "policy",
}


def table_name(relation: ast.RangeVar | None) -> str:
    """A relation's own name as the parser folded it (unquoted names are lower-cased)."""
    return str(relation.relname) if relation is not None and relation.relname else "?"


def object_words(kind: object) -> str:
    """``ObjectType.OBJECT_MATVIEW`` -> ``matview``, for messages."""
    name = getattr(kind, "name", None) or "object"
    return str(name).removeprefix("OBJECT_").lower().replace("_", " ")


def last_name(obj: object) -> str | None:
    """The object's own name from a parse-tree name list (``schema.table`` -> ``table``)."""
    if isinstance(obj, ast.String):
        return str(obj.sval)
    if isinstance(obj, ast.ObjectWithArgs):
        return last_name(obj.objname)
    if isinstance(obj, ast.TypeName):
        return last_name(obj.names)
    if isinstance(obj, tuple | list) and obj:
        return last_name(obj[-1])
    return None


def drop_targets(node: ast.DropStmt) -> list[ObjectKey]:
    """What a ``DROP`` removes, as object keys (kinds the linter does not track are left out)."""
    kind = _DROP_KINDS.get(node.removeType) if node.removeType is not None else None
    if kind is None:
        return []
    return [(kind, name) for obj in node.objects or () if (name := last_name(obj))]


def alter_table_cmds(node: ast.AlterTableStmt) -> Iterator[ast.AlterTableCmd]:
    """The subcommands of an ``ALTER TABLE`` (not ``ALTER INDEX``/``ALTER VIEW``...)."""
    if node.objtype != ObjectType.OBJECT_TABLE:
        return
    for cmd in node.cmds or ():
        if isinstance(cmd, ast.AlterTableCmd):
            yield cmd


def not_null_columns(expr: ast.Node | None) -> list[str]:
    """Columns a CHECK expression proves NOT NULL: ``col IS NOT NULL``, also inside top-level ANDs."""
    if isinstance(expr, ast.NullTest) and expr.nulltesttype == NullTestType.IS_NOT_NULL:
        ref = expr.arg
        if isinstance(ref, ast.ColumnRef) and ref.fields and len(ref.fields) == 1:
            name = last_name(ref.fields)
            return [name] if name else []
    if isinstance(expr, ast.BoolExpr) and expr.boolop == BoolExprType.AND_EXPR:
        return [col for arg in expr.args or () for col in not_null_columns(arg)]
    return []


class _ColumnRefs(Visitor):
    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_ColumnRef(self, ancestors: object, node: ast.ColumnRef) -> None:
        name = last_name(node.fields)
        if name:
            self.names.add(name)


def column_refs(expr: ast.Node | None) -> set[str]:
    """Column names an expression mentions (``price > 0 AND name <> ''`` -> {price, name})."""
    if expr is None:
        return set()
    refs = _ColumnRefs()
    refs(expr)
    return refs.names


def _names(items: Iterable[object] | None) -> set[str]:
    return {name for item in items or () if (name := last_name(item))}


def rename_keys(node: ast.RenameStmt) -> tuple[ObjectKey, ObjectKey] | None:
    """``(old, new)`` keys of a RENAME the linter tracks (tables, columns, indexes, constraints, ...)."""
    kind = _RENAME_KINDS.get(node.renameType) if node.renameType is not None else None
    if kind is None or not node.newname:
        return None
    table = table_name(node.relation) if node.relation is not None else "?"
    if kind == "column":
        return ("column", f"{table}.{node.subname}"), ("column", f"{table}.{node.newname}")
    if kind in ("constraint", "trigger", "policy"):
        old = node.subname
    elif node.relation is not None:
        old = node.relation.relname
    else:
        old = last_name(node.object)
    return ((kind, str(old)), (kind, str(node.newname))) if old else None


def removed_keys(node: ast.Node) -> list[ObjectKey]:
    """What a statement drops or renames away: ``DROP ...``, ``DROP COLUMN``, ``DROP CONSTRAINT``,
    ``DROP DEFAULT`` (as ``("default", "table.column")``) and the old name of a RENAME."""
    if isinstance(node, ast.DropStmt):
        return drop_targets(node)
    if isinstance(node, ast.RenameStmt):
        keys = rename_keys(node)
        return [keys[0]] if keys else []
    out: list[ObjectKey] = []
    if isinstance(node, ast.AlterTableStmt):
        table = table_name(node.relation)
        for cmd in alter_table_cmds(node):
            if cmd.subtype == AlterTableType.AT_DropColumn:
                out.append(("column", f"{table}.{cmd.name}"))
            elif cmd.subtype == AlterTableType.AT_DropConstraint:
                out.append(("constraint", str(cmd.name)))
            elif cmd.subtype == AlterTableType.AT_ColumnDefault and cmd.def_ is None:
                out.append(("default", f"{table}.{cmd.name}"))
    return out


def cascades(node: ast.Node) -> bool:
    """A DROP (or ``DROP COLUMN``) with CASCADE: it also removes what depends on it."""
    if isinstance(node, ast.DropStmt):
        return node.behavior == DropBehavior.DROP_CASCADE
    return isinstance(node, ast.AlterTableStmt) and any(
        c.behavior == DropBehavior.DROP_CASCADE for c in alter_table_cmds(node)
    )


@dataclass
class FileContext:
    """State of one SQL file as the linter walks it, statement by statement."""

    phase: Phase
    source: str
    created: set[ObjectKey] = field(default_factory=set)
    not_null_checks: dict[str, set[tuple[str, str]]] = field(default_factory=dict)
    validated_not_null: set[tuple[str, str]] = field(default_factory=set)
    in_transaction_block: bool = False
    expand_created: frozenset[ObjectKey] | None = None
    """For rollback: what expand (and the index steps) created, when expand is SQL; None when unknown."""
    origins: dict[ObjectKey, int] = field(default_factory=dict)
    """What this file created and still has at its end, with the line that created it."""
    removed: dict[ObjectKey, int] = field(default_factory=dict)
    """What this file dropped (or renamed away) that it had not created itself, with the line."""
    appeared: set[ObjectKey] = field(default_factory=set)
    """Every name this file creates, re-adds, renames something to, or sets a default on."""
    cascaded: set[ObjectKey] = field(default_factory=set)
    """What this file dropped with CASCADE (its dependents went with it)."""
    owners: dict[ObjectKey, str] = field(default_factory=dict)
    """The table of each index, constraint, trigger and policy this file created."""
    uses: dict[ObjectKey, set[ObjectKey]] = field(default_factory=dict)
    """What each created index, constraint or trigger depends on (columns, the trigger's function)."""
    file_appears: frozenset[ObjectKey] = frozenset()
    """What the whole file (also below the current statement) makes appear; set by the linter."""
    new_code_reads: dict[ObjectKey, str] = field(default_factory=dict)
    """For contract: what the new code reads, and why lint thinks so (expand created it, a backfill
    writes it, an index step builds it)."""
    group_not_valid: dict[str, str] = field(default_factory=dict)
    """Constraints added NOT VALID in the current transaction group: name -> table."""
    group_enum_values: dict[str, str] = field(default_factory=dict)
    """Enum labels added in the current transaction group (not usable before it commits): label -> type."""
    group_types: set[str] = field(default_factory=set)
    """Types created in the current transaction group (PostgreSQL lets their new labels be used at once)."""
    allowed_lines: dict[int, set[str]] = field(default_factory=dict)
    """Suppressed codes by statement line, for findings placed on this file from another one."""
    live: LiveSchema | None = None
    """The target database (``lint --conn-id``): which tables exist and how big they are; None offline."""

    def is_new_table(self, relation: ast.RangeVar | None) -> bool:
        """True for a table created earlier in this file: it is empty, so locks and scans cost nothing.
        With a live schema, a table expand touches that the target database does not have is new too
        (known, where offline it is assumed to exist); in contract and rollback expand has created it."""
        if relation is None:
            return False
        if ("relation", table_name(relation)) in self.created:
            return True
        return self.live is not None and self.phase == "expand" and not self.live.exists(relation)

    def has_validated_not_null(self, table: str, column: str) -> bool:
        return (table, column) in self.validated_not_null

    # -- advancing -------------------------------------------------------------------------------

    def observe(self, statement: Statement) -> None:
        """Record what ``statement`` creates, validates or opens, for the statements after it."""
        node = statement.node
        if statement.concurrently:  # an autocommit statement: the transaction group before it committed
            self.group_not_valid.clear()
            self.group_enum_values.clear()
            self.group_types.clear()
        before = set(self.created)
        self._removed(node, statement.line)
        self._observe(node)
        for key in self.created - before:
            self.origins[key] = statement.line
            self.appeared.add(key)
        if isinstance(node, ast.RenameStmt) and (keys := rename_keys(node)):
            self.appeared.add(keys[1])
        elif isinstance(node, ast.AlterEnumStmt) and node.newVal and not node.oldVal and node.typeName:
            enum = last_name(node.typeName) or "?"
            if enum not in self.group_types:  # a type created in the same transaction may use it at once
                self.group_enum_values[str(node.newVal)] = enum
        self.group_types.update(key[1] for key in self.created - before if key[0] == "type")

    def _removed(self, node: ast.Node, line: int) -> None:
        keys = removed_keys(node)
        for key in keys:
            if key in self.origins:
                del self.origins[key]  # created by this file and gone again: no net effect
                self.created.discard(key)
            else:
                self.removed.setdefault(key, line)
        if cascades(node):
            self.cascaded.update(keys)

    def _observe(self, node: ast.Node) -> None:
        if isinstance(node, ast.TransactionStmt):
            kind = node.kind
            if kind in (TransactionStmtKind.TRANS_STMT_BEGIN, TransactionStmtKind.TRANS_STMT_START):
                self.in_transaction_block = True
            elif kind in (TransactionStmtKind.TRANS_STMT_COMMIT, TransactionStmtKind.TRANS_STMT_ROLLBACK):
                self.in_transaction_block = bool(node.chain)
        elif isinstance(node, ast.CreateStmt):
            self._created_table(node.relation, node.tableElts or ())
        elif isinstance(node, ast.CreateTableAsStmt) and node.into is not None:
            self.created.add(("relation", table_name(node.into.rel)))
        elif isinstance(node, ast.ViewStmt):
            self.created.add(("relation", table_name(node.view)))
        elif isinstance(node, ast.CreateSeqStmt):
            self.created.add(("relation", table_name(node.sequence)))
        elif isinstance(node, ast.IndexStmt) and node.idxname:
            key = ("index", str(node.idxname))
            self.created.add(key)
            table = table_name(node.relation)
            self.owners[key] = table
            columns = {p.name for p in node.indexParams or () if isinstance(p, ast.IndexElem) and p.name}
            self.uses[key] = {("column", f"{table}.{c}") for c in columns}
        elif isinstance(node, ast.CreateFunctionStmt) and (name := last_name(node.funcname)):
            self.created.add(("function", name))
        elif isinstance(node, ast.CreateTrigStmt):
            key = ("trigger", str(node.trigname))
            self.created.add(key)
            self.owners[key] = table_name(node.relation)
            function = last_name(node.funcname)
            self.uses[key] = {("function", function)} if function else set()
        elif isinstance(node, ast.CreatePolicyStmt):
            key = ("policy", str(node.policy_name))
            self.created.add(key)
            self.owners[key] = table_name(node.table)
        elif (
            isinstance(node, ast.CreateEnumStmt | ast.CreateRangeStmt) and (name := last_name(node.typeName))
        ) or (isinstance(node, ast.CreateDomainStmt) and (name := last_name(node.domainname))):
            self.created.add(("type", name))
        elif isinstance(node, ast.CompositeTypeStmt):
            self.created.add(("type", table_name(node.typevar)))
        elif isinstance(node, ast.CreateExtensionStmt):
            self.created.add(("extension", str(node.extname)))
        elif isinstance(node, ast.CreateSchemaStmt) and node.schemaname:
            self.created.add(("schema", str(node.schemaname)))
        elif isinstance(node, ast.AlterTableStmt):
            self._altered_table(node)

    def _created_table(self, relation: ast.RangeVar | None, elements: tuple[ast.Node, ...]) -> None:
        table = table_name(relation)
        self.created.add(("relation", table))
        for element in elements:
            if isinstance(element, ast.ColumnDef) and element.colname:
                self.created.add(("column", f"{table}.{element.colname}"))
            elif isinstance(element, ast.Constraint):
                self._added_constraint(table, element)

    def _altered_table(self, node: ast.AlterTableStmt) -> None:
        table = str(table_name(node.relation))
        for cmd in alter_table_cmds(node):
            subtype = cmd.subtype
            if subtype == AlterTableType.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
                self.created.add(("column", f"{table}.{cmd.def_.colname}"))
            elif subtype == AlterTableType.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
                self._added_constraint(table, cmd.def_)
            elif subtype == AlterTableType.AT_ValidateConstraint and cmd.name in self.not_null_checks:
                self.validated_not_null.update(self.not_null_checks[str(cmd.name)])
            elif subtype == AlterTableType.AT_ColumnDefault and cmd.def_ is not None:
                self.appeared.add(("default", f"{table}.{cmd.name}"))

    def _added_constraint(self, table: str, constraint: ast.Constraint) -> None:
        columns = (
            not_null_columns(constraint.raw_expr) if constraint.contype == ConstrType.CONSTR_CHECK else []
        )
        # An unnamed CHECK gets PostgreSQL's generated name, so a later VALIDATE of it is recognised.
        name = constraint.conname or (f"{table}_{columns[0]}_check" if columns else None)
        if name:
            key = ("constraint", str(name))
            self.created.add(key)
            self.owners[key] = table
            refs = column_refs(constraint.raw_expr) | _names(constraint.keys) | _names(constraint.fk_attrs)
            self.uses[key] = {("column", f"{table}.{c}") for c in refs}
            if constraint.skip_validation:
                self.group_not_valid[str(name)] = table
        for column in columns:
            if name:
                self.not_null_checks.setdefault(str(name), set()).add((table, column))
            if not constraint.skip_validation:
                self.validated_not_null.add((table, column))

    def carried_into(self, phase: Phase, source: str) -> FileContext:
        """The context a later phase starts from: constraints this file added (e.g. NOT VALID in expand)
        are known to contract; tables it created are no longer new (the app has had them since)."""
        return FileContext(
            phase=phase,
            source=source,
            not_null_checks={k: set(v) for k, v in self.not_null_checks.items()},
            validated_not_null=set(self.validated_not_null),
            live=self.live,
        )
