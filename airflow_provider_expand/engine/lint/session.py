"""Rules about session settings a phase file must not touch. The runner's ``lock_timeout`` (and
``statement_timeout``, ``idle_in_transaction_session_timeout``) is what keeps a DDL statement from queueing
the application behind it, or a vanished worker from holding a lock: a file that switches them off, or
changes the role they were set for, takes that guarantee away (the runner re-asserts them before every
statement anyway; these rules say so before anything runs). A PL/pgSQL ``DO`` block runs in the runner's
session too: the SQL inside it, and the string constants it ``EXECUTE``s, are checked the same way.
"""

from __future__ import annotations

from collections.abc import Iterator

import pglast
from pglast import ast
from pglast.enums import DiscardMode, VariableSetKind
from pglast.parser import ParseError
from pglast.visitors import Visitor

from airflow_provider_expand.engine.lint.context import FileContext, last_name
from airflow_provider_expand.engine.lint.findings import Rule
from airflow_provider_expand.engine.statements import Statement

# The settings the runner owns: what makes its lock waits and transactions bounded.
TIMEOUTS = frozenset({"lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout"})
# Switching the role changes who owns what the file creates, and which privileges it runs with.
ROLES = frozenset({"role", "session_authorization"})


def _verb(node: ast.VariableSetStmt) -> str:
    """``SET``, ``SET LOCAL`` or ``RESET``, as the statement was written."""
    if node.kind in (VariableSetKind.VAR_RESET, VariableSetKind.VAR_RESET_ALL):
        return "RESET"
    return "SET LOCAL" if node.is_local else "SET"


def _setting(node: ast.Node) -> str | None:
    """The lower-cased name a SET/RESET statement changes (None for RESET ALL and SET TRANSACTION)."""
    if isinstance(node, ast.VariableSetStmt) and node.kind != VariableSetKind.VAR_SET_MULTI and node.name:
        return str(node.name).lower()
    return None


def _constant_text(arg: ast.Node | None) -> str | None:
    """The text of a string constant, also behind a cast (``'lock_timeout'::text``)."""
    while isinstance(arg, ast.TypeCast):
        arg = arg.arg
    if isinstance(arg, ast.A_Const) and isinstance(arg.val, ast.String):
        return str(arg.val.sval)
    return None


class _SetConfigCalls(Visitor):
    """Every ``set_config(name, ...)`` call anywhere in a statement: its first argument's constant text,
    or None when the name is computed (so no one can tell which setting it changes)."""

    def __init__(self) -> None:
        self.names: list[str | None] = []

    def visit_FuncCall(self, ancestors: object, node: ast.FuncCall) -> None:
        if (last_name(node.funcname) or "").lower() == "set_config":
            first = node.args[0] if node.args else None
            text = _constant_text(first)
            self.names.append(text.lower().strip() if text is not None else None)


def _set_config_names(node: ast.Node) -> list[str | None]:
    calls = _SetConfigCalls()
    calls(node)
    return calls.names


def _queries(tree: object) -> Iterator[tuple[str, int]]:
    """Every ``PLpgSQL_expr`` of a parsed PL/pgSQL body: (query text, parse mode; 0 = a whole statement)."""
    if isinstance(tree, dict):
        expr = tree.get("PLpgSQL_expr")
        if isinstance(expr, dict) and isinstance(expr.get("query"), str):
            yield expr["query"], int(expr.get("parseMode") or 0)
        for value in tree.values():
            yield from _queries(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _queries(value)


def plpgsql_kinds(tree: object) -> set[str]:
    """The kinds of PL/pgSQL statement in a parsed body (``PLpgSQL_stmt_commit``, ``PLpgSQL_stmt_fors``...)."""
    kinds: set[str] = set()
    if isinstance(tree, dict):
        kinds.update(k for k in tree if k.startswith("PLpgSQL_stmt_"))
        for value in tree.values():
            kinds |= plpgsql_kinds(value)
    elif isinstance(tree, list):
        for value in tree:
            kinds |= plpgsql_kinds(value)
    return kinds


def _parsed(text: str) -> list[ast.Node]:
    try:
        return [raw.stmt for raw in pglast.parse_sql(text) if raw.stmt is not None]
    except ParseError:
        return []


def _selected_text(node: ast.Node) -> str | None:
    """``'text'`` of ``SELECT 'text'``: how an ``EXECUTE 'SET ...'`` argument parses."""
    if isinstance(node, ast.SelectStmt) and node.targetList and len(node.targetList) == 1:
        target = node.targetList[0]
        return _constant_text(target.val) if isinstance(target, ast.ResTarget) else None
    return None


def do_body(statement: Statement) -> list[object] | None:
    """The parsed PL/pgSQL tree of a ``DO`` block's body (pglast's JSON form), or None when the
    statement is no PL/pgSQL DO block or its body does not parse (the server would refuse it too)."""
    node = statement.node
    if not isinstance(node, ast.DoStmt):
        return None
    options = {o.defname: o.arg for o in node.args or () if isinstance(o, ast.DefElem)}
    body, language = options.get("as"), options.get("language")
    if not isinstance(body, ast.String) or (isinstance(language, ast.String) and language.sval != "plpgsql"):
        return None
    wrapper = f"CREATE FUNCTION expand_lint_do() RETURNS void LANGUAGE plpgsql AS $expand_lint${body.sval}$expand_lint$"
    try:
        return list(pglast.parse_plpgsql(wrapper))
    except ParseError:
        return None


def statement_nodes(statement: Statement) -> Iterator[tuple[str, ast.Node]]:
    """The statement, and for a PL/pgSQL ``DO`` block (it runs now, in the runner's session) the SQL
    inside it, also the string constants it EXECUTEs: (where, node)."""
    yield "", statement.node
    tree = do_body(statement)
    if tree is None:
        return
    for query, mode in _queries(tree):
        for inner in _parsed(query if mode == 0 else f"SELECT {query}"):
            yield "inside DO: ", inner
            executed = _selected_text(inner)
            for dynamic in _parsed(executed) if executed else ():
                yield "inside DO (EXECUTE): ", dynamic


def _timeouts(statement: Statement, ctx: FileContext) -> Iterator[str]:
    for where, node in statement_nodes(statement):
        yield from (where + message for message in _timeout_messages(node))


def _timeout_messages(node: ast.Node) -> Iterator[str]:
    name = _setting(node)
    if isinstance(node, ast.VariableSetStmt) and name in TIMEOUTS:
        yield (
            f"{_verb(node)} {name} overrides the runner's {name}: a DDL statement could then wait for a lock "
            "(or a transaction stay open) without bound, queueing the application behind it"
        )
    elif isinstance(node, ast.VariableSetStmt) and node.kind == VariableSetKind.VAR_RESET_ALL:
        yield (
            "RESET ALL drops the runner's lock_timeout, statement_timeout and "
            "idle_in_transaction_session_timeout back to the server defaults (often: no limit)"
        )
    elif isinstance(node, ast.DiscardStmt) and node.target == DiscardMode.DISCARD_ALL:
        yield "DISCARD ALL resets the runner's lock_timeout and statement_timeout to the server defaults"
    for called in _set_config_names(node):
        if called in TIMEOUTS:
            yield f"set_config('{called}', ...) overrides the runner's {called} from inside a statement"
        elif called is None:
            yield (
                "set_config() with a computed setting name: it may override the runner's lock_timeout or "
                "statement_timeout, and lint cannot tell which setting it changes"
            )


def _roles(statement: Statement, ctx: FileContext) -> Iterator[str]:
    for where, node in statement_nodes(statement):
        yield from (where + message for message in _role_messages(node))


def _role_messages(node: ast.Node) -> Iterator[str]:
    name = _setting(node)
    if isinstance(node, ast.VariableSetStmt) and name in ROLES:
        what = "ROLE" if name == "role" else "SESSION AUTHORIZATION"
        yield (
            f"{_verb(node)} {what} runs the rest of the phase as another role: what it creates gets another "
            "owner and its privileges differ from the ones preflight checked"
        )
    for called in _set_config_names(node):
        if called in ROLES:
            yield f"set_config('{called}', ...) switches the role from inside a statement"


TIMEOUT_OVERRIDE = Rule(
    code="EX801",
    name="timeout-override",
    alternative="remove it: set lock_timeout (and statement_timeout) in migration.yaml; the runner applies "
    "them to every statement, with retries on lock timeouts",
    check=_timeouts,
    explanation="""Timeouts belong to the runner. Other linters ask each file to SET lock_timeout and
    statement_timeout; here each statement runs under the runner's lock_timeout, statement_timeout (if
    set) and idle_in_transaction_session_timeout, from migration.yaml, re-asserted before every
    statement, with retries when a lock wait times out. So a SET lock_timeout = 0 in a file could only
    affect the statement that sets it; this rule refuses it anyway, and also RESET, RESET ALL, DISCARD
    ALL and set_config(...) of those settings anywhere in a statement, and the same inside a PL/pgSQL
    DO block, including the string constants it EXECUTEs. Set lock_timeout and statement_timeout in
    migration.yaml.""",
    squawk=("require-timeout-settings", "require-lock-timeout", "require-statement-timeout"),
)
ROLE_SWITCH = Rule(
    code="EX802",
    name="role-switch",
    alternative="remove it: run the migration as the intended role (the login of postgres_conn_id), or "
    "grant what is needed to that role beforehand",
    check=_roles,
    explanation="""SET ROLE and SET SESSION AUTHORIZATION (also inside a DO block) would run the rest
    of the migration, and the runner's own ledger writes, as someone else than the connection's login:
    what it creates gets another owner, and its privileges are not the ones preflight checked.""",
)

RULES = (TIMEOUT_OVERRIDE, ROLE_SWITCH)
