"""Rules about the types a migration defines: a domain's CHECK (every column of the domain is checked
again whenever it changes, under the tables' locks) and an enum's new value (appended at the end unless
placed, and unusable until the transaction that added it commits).
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast
from pglast.enums import ConstrType
from pglast.visitors import Visitor

from airflow_provider_expand.engine.lint.context import FileContext, last_name
from airflow_provider_expand.engine.lint.findings import Rule
from airflow_provider_expand.engine.statements import Statement

# AlterDomainStmt.subtype: the forms that check every stored value of the domain's columns.
_CHECKING_DOMAIN_FORMS = {"C": "ADD CONSTRAINT", "O": "SET NOT NULL"}


def _create_domain_check(statement: Statement, ctx: FileContext) -> Iterator[str]:
    node = statement.node
    if isinstance(node, ast.CreateDomainStmt):
        checks = [c for c in node.constraints or () if isinstance(c, ast.Constraint)]
        if any(c.contype == ConstrType.CONSTR_CHECK for c in checks):
            yield (
                f"creates domain {last_name(node.domainname)} with a CHECK: changing it later re-checks every "
                "column of the domain in every table, and casting a column to it rewrites the table"
            )


def _alter_domain(statement: Statement, ctx: FileContext) -> Iterator[str]:
    node = statement.node
    form = _CHECKING_DOMAIN_FORMS.get(str(node.subtype)) if isinstance(node, ast.AlterDomainStmt) else None
    if isinstance(node, ast.AlterDomainStmt) and form:
        name = last_name(node.typeName)
        not_valid = isinstance(node.def_, ast.Constraint) and node.def_.skip_validation
        if not_valid:
            yield (
                f"ALTER DOMAIN {name} ADD CONSTRAINT ... NOT VALID: new values are checked at once, but its "
                "VALIDATE scans every column of the domain in every table, which lint cannot see"
            )
        else:
            yield (
                f"ALTER DOMAIN {name} {form} scans every column of the domain in every table, holding a lock "
                "on each that blocks their writes until all are checked"
            )


def _enum_order(statement: Statement, ctx: FileContext) -> Iterator[str]:
    node = statement.node
    if isinstance(node, ast.AlterEnumStmt) and node.newVal and not node.oldVal and not node.newValNeighbor:
        yield (
            f"adds {node.newVal!r} to enum {last_name(node.typeName)} without BEFORE or AFTER: it sorts after "
            "every existing value, so comparisons and ORDER BY on the enum may place it wrongly"
        )


class _Strings(Visitor):
    def __init__(self) -> None:
        self.values: set[str] = set()

    def visit_A_Const(self, ancestors: object, node: ast.A_Const) -> None:
        if isinstance(node.val, ast.String):
            self.values.add(str(node.val.sval))


def _enum_used_early(statement: Statement, ctx: FileContext) -> Iterator[str]:
    if not ctx.group_enum_values:
        return
    strings = _Strings()
    strings(statement.node)
    for label in sorted(strings.values & ctx.group_enum_values.keys()):
        yield (
            f"uses {label!r}, which an earlier statement of the same transaction added to enum "
            f"{ctx.group_enum_values[label]}: PostgreSQL refuses a new enum value until the transaction that "
            "added it commits (unsafe use of new value)"
        )


DOMAIN_CHECK = Rule(
    code="EX320",
    name="domain-check",
    alternative="use the base type and put the CHECK on each column (ADD CONSTRAINT ... NOT VALID, then "
    "VALIDATE in contract)",
    check=_create_domain_check,
    severity="warning",
    explanation=(
        "A domain bundles a type with a CHECK so it can be reused; the price is paid at every change: "
        "altering the domain's constraint re-validates every column that uses it, in every table, and "
        "PostgreSQL treats a cast to a domain with constraints as needing a rewrite. A CHECK on the "
        "column itself can be added NOT VALID and validated without blocking."
    ),
    squawk=("ban-create-domain-with-constraint",),
)
ALTER_DOMAIN = Rule(
    code="EX321",
    name="alter-domain-constraint",
    alternative="add the CHECK to the columns themselves (ADD CONSTRAINT ... NOT VALID, VALIDATE in "
    "contract), or create a new domain and move columns to it the expand/contract way",
    check=_alter_domain,
    explanation=(
        "ALTER DOMAIN ... ADD CONSTRAINT and SET NOT NULL check every stored value of every column of "
        "the domain, table by table, while holding locks that block their writes; the tables are not "
        "even named in the statement. With NOT VALID the check is deferred to a VALIDATE that scans the "
        "same columns."
    ),
    squawk=("ban-alter-domain-with-add-constraint",),
    cost="scan",
)
ENUM_ORDER = Rule(
    code="EX322",
    name="enum-value-order",
    alternative="place it: ALTER TYPE ... ADD VALUE 'new' BEFORE 'existing' (or AFTER 'existing')",
    check=_enum_order,
    severity="warning",
    explanation=(
        "An enum's order is the order of its values, and queries compare on it (status < 'approved'). "
        "ADD VALUE without BEFORE/AFTER appends, so a value meant to sit in the middle of a workflow "
        "sorts after its end and such queries silently miss it."
    ),
    squawk=("require-enum-value-ordering",),
)
ENUM_USED_EARLY = Rule(
    code="EX323",
    name="enum-value-same-transaction",
    alternative="use the new value in a later phase (or after a CONCURRENTLY statement, which commits the "
    "group before it): contract.sql, a backfill, or the new code",
    check=_enum_used_early,
    explanation=(
        "The runner applies the statements between two CONCURRENTLY statements in one transaction. A "
        "value added with ALTER TYPE ... ADD VALUE cannot be used (inserted, compared, set as a default) "
        "until that transaction commits: the statement that uses it fails and the phase with it."
    ),
)

RULES = (DOMAIN_CHECK, ALTER_DOMAIN, ENUM_ORDER, ENUM_USED_EARLY)
