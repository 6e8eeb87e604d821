"""WAL segments waiting for ``archive_command``: the ``.ready`` files of ``pg_wal/archive_status``.

Only where archiving is on. A failing archive command makes ``pg_wal`` grow until the disk is full, and
every batch adds segments: hold until the archiver catches up. ``pg_ls_archive_statusdir()`` needs
superuser or ``pg_monitor``.
"""

from __future__ import annotations

import psycopg

from airflow_provider_expand.engine.health.gate import GateUnreadable


class ArchiveBacklogGate:
    name = "archive backlog"

    def __init__(self, max_segments: int) -> None:
        self.max_segments = max_segments
        self.archiving: bool | None = None

    def read(self, conn: psycopg.Connection) -> str | None:
        if self.archiving is None:
            row = conn.execute("SELECT current_setting('archive_mode') <> 'off'").fetchone()
            self.archiving = bool(row and row[0])
        if not self.archiving:
            return None
        try:
            row = conn.execute(
                "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'"
            ).fetchone()
        except psycopg.errors.InsufficientPrivilege as exc:
            raise GateUnreadable(
                "pg_ls_archive_statusdir() is not allowed for this role: grant it pg_monitor to enable it"
            ) from exc
        backlog = int(row[0]) if row else 0
        if backlog <= self.max_segments:
            return None
        return f"archive backlog {backlog} segments > {self.max_segments}"
