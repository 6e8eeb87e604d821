"""What every gate is: a name, a limit and a read of the database that says whether it is over.

A gate reads between batches on the backfill's own connection (autocommit, between transactions). A gate
that cannot be read (a role without ``pg_monitor``, a view it may not see) raises :class:`GateUnreadable`;
the hold then warns once and stops reading it: a missing privilege must not fail a backfill.
"""

from __future__ import annotations

from typing import Protocol

import psycopg


class GateUnreadable(Exception):
    """The gate cannot see what it needs; the message says what to grant."""


class Gate(Protocol):
    """One health gate."""

    name: str

    def read(self, conn: psycopg.Connection) -> str | None:
        """Why the backfill must hold (``replica lag 80 MB > 64 MB``), or ``None`` while healthy."""
        ...


def can_read_all_stats(conn: psycopg.Connection) -> bool:
    """Whether this role sees other roles' rows in the statistics views (superuser, pg_read_all_stats)."""
    row = conn.execute(
        "SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)"
        " OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')"
    ).fetchone()
    return bool(row and row[0])


STATS_HINT = "grant the role pg_monitor (or pg_read_all_stats) to enable it"
