"""Who paused a queue, and what a pause or resume did to it.

The paused-by marker (``<prefix>:<name>:airflow-expand:paused-by``) names the migration, the Airflow run
and the holder (the run's ``queues.pause`` or its ``rollback``). A resume acts only on a marker of its own
migration, run and holder, and deletes it: a marker of a finished run is stale, and resumes nothing. The
scripts in ``engine/queues/lua`` read and write it; this module encodes it and words the outcomes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal, get_args

Holder = Literal["run", "rollback"]
HOLDERS: tuple[str, ...] = get_args(Holder)


@dataclass(frozen=True)
class Marker:
    """The paused-by marker: this migration's run paused the queue, and ``holder`` is to resume it."""

    migration_id: str
    run_id: str
    holder: Holder = "run"

    def __post_init__(self) -> None:
        for name in ("migration_id", "run_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        if self.holder not in HOLDERS:
            raise ValueError(f"holder must be one of {', '.join(HOLDERS)}, got {self.holder!r}")

    def encode(self) -> str:
        """JSON, readable with ``redis-cli GET``; the Lua scripts compare its fields with ``cjson``."""
        return json.dumps(
            {"migration_id": self.migration_id, "run_id": self.run_id, "holder": self.holder}, sort_keys=True
        )

    @staticmethod
    def decode(raw: str) -> Marker | None:
        """None for no marker; a bare migration id (the first release's marker) has no run: it is stale."""
        if not raw:
            return None
        try:
            data = json.loads(raw)
            return Marker(str(data["migration_id"]), str(data["run_id"]), data.get("holder", "run"))
        except (ValueError, KeyError, TypeError):
            return Marker(raw, "?", "run")

    def describe(self) -> str:
        held = " (held by its rollback)" if self.holder == "rollback" else ""
        return f"migration {self.migration_id!r}, run {self.run_id!r}{held}"


PauseAction = Literal[
    "paused", "would_pause", "already_paused_by_us", "paused_by_earlier_run", "already_paused"
]
ResumeAction = Literal["resumed", "already_resumed", "not_ours", "held_by_rollback"]


@dataclass(frozen=True)
class PauseResult:
    """What the pause script did to one queue; ``owner`` is the marker found (or written)."""

    queue: str
    layout: str
    version: str
    action: PauseAction
    owner: Marker | None

    @property
    def changed(self) -> bool:
        return self.action == "paused"

    def describe(self) -> str:
        where = f"queue {self.queue!r} ({self.layout}{' ' + self.version if self.version else ''})"
        if self.action == "paused":
            return f"{where}: paused"
        if self.action == "would_pause":
            return f"{where}: dry run, would pause"
        if self.action == "already_paused_by_us":
            return f"{where}: already paused by this run (a retry, or the rollback taking over its pause)"
        if self.action == "paused_by_earlier_run" and self.owner is not None:
            return (
                f"{where}: paused under a marker of an earlier run ({self.owner.describe()}) that never "
                "resumed it; whether somebody paused it since cannot be told, so it is not this run's to "
                "resume: it stays paused until an operator resumes it"
            )
        by = f" (marked by {self.owner.describe()})" if self.owner else ""
        return f"{where}: was already paused before this run{by}; it will be left paused"


@dataclass(frozen=True)
class ResumeResult:
    """What the resume script did to one queue."""

    queue: str
    layout: str
    version: str
    action: ResumeAction
    owner: Marker | None
    calls: int = 1

    @property
    def changed(self) -> bool:
        return self.action in ("resumed", "already_resumed")

    def describe(self) -> str:
        if self.action == "resumed":
            extra = f" (paused list moved back in {self.calls} calls)" if self.calls > 1 else ""
            return f"queue {self.queue!r} ({self.layout}): resumed{extra}"
        if self.action == "already_resumed":
            return f"queue {self.queue!r} ({self.layout}): somebody resumed it already; our marker cleared"
        if self.action == "held_by_rollback":
            return (
                f"queue {self.queue!r}: held by the rollback of this run, which resumes it once the old "
                "container is back and rollback.sql has run: left as is"
            )
        if self.owner:
            return f"queue {self.queue!r}: paused by {self.owner.describe()}, not by this run: left as is"
        return f"queue {self.queue!r}: no paused-by marker (nothing of this run's to resume): left as is"
