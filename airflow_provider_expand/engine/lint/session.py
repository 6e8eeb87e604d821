"""Rules about session settings a phase file must not touch. The runner's ``lock_timeout`` (and
``statement_timeout``, ``idle_in_transaction_session_timeout``) is what keeps a DDL statement from queueing
the application behind it, or a vanished worker from holding a lock: a file that switches them off, or
changes the role they were set for, takes that guarantee away (the runner re-asserts them before every
statement anyway; these rules say so before anything runs).
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast
from pglast.enums import DiscardMode, VariableSetKind
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


def _set_config_names(statement: Statement) -> list[str | None]:
    calls = _SetConfigCalls()
    calls(statement.node)
    return calls.names


def _timeouts(statement: Statement, ctx: FileContext) -> Iterator[str]:
    node = statement.node
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
    for called in _set_config_names(statement):
        if called in TIMEOUTS:
            yield f"set_config('{called}', ...) overrides the runner's {called} from inside a statement"
        elif called is None:
            yield (
                "set_config() with a computed setting name: it may override the runner's lock_timeout or "
                "statement_timeout, and lint cannot tell which setting it changes"
            )


def _roles(statement: Statement, ctx: FileContext) -> Iterator[str]:
    node = statement.node
    name = _setting(node)
    if isinstance(node, ast.VariableSetStmt) and name in ROLES:
        what = "ROLE" if name == "role" else "SESSION AUTHORIZATION"
        yield (
            f"{_verb(node)} {what} runs the rest of the phase as another role: what it creates gets another "
            "owner and its privileges differ from the ones preflight checked"
        )
    for called in _set_config_names(statement):
        if called in ROLES:
            yield f"set_config('{called}', ...) switches the role from inside a statement"


TIMEOUT_OVERRIDE = Rule(
    "EX801",
    "timeout-override",
    "remove it: set lock_timeout (and statement_timeout) in migration.yaml; the runner applies them to "
    "every statement, with retries on lock timeouts",
    _timeouts,
)
ROLE_SWITCH = Rule(
    "EX802",
    "role-switch",
    "remove it: run the migration as the intended role (the login of postgres_conn_id), or grant what "
    "is needed to that role beforehand",
    _roles,
)

RULES = (TIMEOUT_OVERRIDE, ROLE_SWITCH)
