"""Rules about names as PostgreSQL stores them: an identifier longer than 63 bytes is cut short without an
error, so the name the files (and the runner, and rollback.sql) use is not the one in the catalog.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast.parser import scan

from airflow_provider_expand.engine.lint.context import FileContext
from airflow_provider_expand.engine.lint.findings import Rule
from airflow_provider_expand.engine.statements import Statement

MAX_IDENTIFIER_BYTES = 63  # NAMEDATALEN - 1 of a stock build


def _identifier(text: str) -> str:
    """An IDENT token as PostgreSQL reads it: quoted ones unquoted, the others lower-cased."""
    if text.startswith('"') and text.endswith('"'):
        return text[1:-1].replace('""', '"')
    return text.lower()


def _too_long(statement: Statement, ctx: FileContext) -> Iterator[str]:
    seen: set[str] = set()
    for token in scan(statement.sql):
        if token.name != "IDENT":
            continue
        name = _identifier(statement.sql[token.start : token.end + 1])
        size = len(name.encode("utf-8"))
        if size > MAX_IDENTIFIER_BYTES and name not in seen:
            seen.add(name)
            kept = name.encode("utf-8")[:MAX_IDENTIFIER_BYTES].decode("utf-8", errors="ignore")
            yield (
                f"identifier {name[:20]}... is {size} bytes: PostgreSQL silently keeps the first "
                f"{MAX_IDENTIFIER_BYTES} ({kept!r}), so lookups by the full name (the runner's index check, "
                "the ledger, rollback.sql written by hand) miss it, and two such names can collide"
            )


IDENTIFIER_TOO_LONG = Rule(
    code="EX004",
    name="identifier-too-long",
    alternative=f"shorten it to at most {MAX_IDENTIFIER_BYTES} bytes (UTF-8: fewer characters for non-ASCII)",
    check=_too_long,
    explanation=(
        "Names longer than 63 bytes are truncated with only a NOTICE. The object then exists under a "
        "name nobody wrote: an index the runner checks by the name in the file is not found, and two long "
        "names with the same first 63 bytes are the same object."
    ),
    squawk=("identifier-too-long",),
)

RULES = (IDENTIFIER_TOO_LONG,)
