"""What the linter knows at a statement: the phase, and what earlier statements of the file (or of
expand.sql, for contract and rollback) created, validated or opened. Rules read it; only the linter
advances it, after every rule has seen the statement.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pglast import ast
from pglast.enums import (
    AlterTableType,
    BoolExprType,
    ConstrType,
    NullTestType,
    ObjectType,
    TransactionStmtKind,
)

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
            self.created.add(("index", str(node.idxname)))
        elif isinstance(node, ast.CreateFunctionStmt) and (name := last_name(node.funcname)):
            self.created.add(("function", name))
        elif isinstance(node, ast.CreateTrigStmt):
            self.created.add(("trigger", str(node.trigname)))
        elif isinstance(node, ast.CreatePolicyStmt):
            self.created.add(("policy", str(node.policy_name)))
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

    def _added_constraint(self, table: str, constraint: ast.Constraint) -> None:
        columns = (
            not_null_columns(constraint.raw_expr) if constraint.contype == ConstrType.CONSTR_CHECK else []
        )
        # An unnamed CHECK gets PostgreSQL's generated name, so a later VALIDATE of it is recognised.
        name = constraint.conname or (f"{table}_{columns[0]}_check" if columns else None)
        if name:
            self.created.add(("constraint", str(name)))
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
