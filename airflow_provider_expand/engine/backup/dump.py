"""The pre-migration backup: take it (``pg_dump -Fc``), judge it (fresh, readable, complete), restore it.

A backup only counts if it can be restored: ``pg_restore --list`` reads only the table of contents, which
a truncated custom-format dump still has, so the data blocks are read in full as well.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from airflow_provider_expand.engine.backup.pg_tools import (
    PgTarget,
    PgToolError,
    client_env,
    resolve_tool,
    run_tool,
)
from airflow_provider_expand.engine.backup.store import (
    BackupDirectoryError,
    BackupError,
    BackupFile,
    BackupFileError,
    BackupStore,
    as_file,
    as_store,
)

__all__ = ["BackupDirectoryError", "BackupError", "BackupFileError"]

DEFAULT_PREFIX = "pre_migration_"
DEFAULT_PATTERN = "pre_migration_*.dump"

# Object kinds of more than one word in a ``pg_restore --list`` line, longest first.
_MULTIWORD_DESCS = sorted(
    [
        "TABLE DATA",
        "TABLE ATTACH",
        "INDEX ATTACH",
        "SEQUENCE SET",
        "SEQUENCE OWNED BY",
        "FK CONSTRAINT",
        "CHECK CONSTRAINT",
        "DEFAULT ACL",
        "ACCESS METHOD",
        "MATERIALIZED VIEW",
        "MATERIALIZED VIEW DATA",
        "FOREIGN TABLE",
        "FOREIGN DATA WRAPPER",
        "SERVER",
        "USER MAPPING",
        "EVENT TRIGGER",
        "LARGE OBJECT",
        "ROW SECURITY",
        "SHELL TYPE",
        "PROCEDURAL LANGUAGE",
        "OPERATOR CLASS",
        "OPERATOR FAMILY",
        "TEXT SEARCH CONFIGURATION",
        "TEXT SEARCH DICTIONARY",
        "TEXT SEARCH PARSER",
        "TEXT SEARCH TEMPLATE",
        "PUBLICATION TABLE",
        "PUBLICATION TABLES IN SCHEMA",
        "DATABASE PROPERTIES",
        "STATISTICS DATA",
    ],
    key=len,
    reverse=True,
)
_TOC_LINE = re.compile(r"^(\d+); (\d+) (\d+) (.+)$")


class RestoreRefusedError(BackupError):
    """The restore was not confirmed with the target database's name; nothing was touched."""


@dataclass(frozen=True)
class TocEntry:
    """One line of ``pg_restore --list``: ``<id>; <tableoid> <oid> <desc> <schema> <name> <owner>``."""

    dump_id: int
    desc: str
    schema: str
    name: str
    owner: str


def parse_toc(text: str) -> list[TocEntry]:
    """Parse a ``pg_restore --list`` listing; comment lines (``;``) are skipped.

    Schema and owner are taken as the first and last words, so a schema name with spaces is misread;
    ``-`` stands for "no schema".
    """
    entries: list[TocEntry] = []
    for line in text.splitlines():
        match = _TOC_LINE.match(line.strip())
        if not match:
            continue
        rest = match.group(4)
        desc = next((d for d in _MULTIWORD_DESCS if rest.startswith(d + " ")), rest.split(" ", 1)[0])
        words = rest[len(desc) :].strip().split(" ")
        schema = words[0] if words else "-"
        owner = words[-1] if len(words) >= 3 else ""
        name = " ".join(words[1:-1]) if len(words) >= 3 else " ".join(words[1:])
        entries.append(TocEntry(int(match.group(1)), desc, schema, name, owner))
    return entries


def tables_with_data(entries: Iterable[TocEntry]) -> set[str]:
    """Every ``schema.table`` whose rows the dump holds (a ``TABLE DATA`` entry)."""
    return {f"{e.schema}.{e.name}" for e in entries if e.desc == "TABLE DATA"}


def missing_tables(entries: Sequence[TocEntry], must_contain: Iterable[str]) -> list[str]:
    """The names in ``must_contain`` (``schema.table`` or bare ``table``) lacking ``TABLE DATA``."""
    qualified = tables_with_data(entries)
    bare = {q.split(".", 1)[1] for q in qualified}
    return [t for t in must_contain if t not in qualified and t not in bare]


def _named(local: Path | None) -> list[str | Path]:
    """The file argument of a client tool: the local file, or none (it reads stdin / writes stdout)."""
    return [local] if local is not None else []


def read_toc(backup: str | Path | BackupFile, *, pg_restore: Path, log: logging.Logger) -> list[TocEntry]:
    """The dump's table of contents, via ``pg_restore --list`` (no database involved), on the file itself
    or on the stream of it from its store."""
    backup = as_file(backup)
    with backup.store.open_read(backup.name) as stream:
        local = backup.store.local_path(backup.name)
        argv: list[str | Path] = [pg_restore, "--list", *_named(local)]
        done = run_tool(
            argv, env=os.environ, log=log, what=f"backup file {backup}", source=None if local else stream
        )
    return parse_toc(done.stdout.decode("utf-8", "replace"))


def read_all_data(backup: str | Path | BackupFile, *, pg_restore: Path, log: logging.Logger) -> None:
    """Read every data block of the dump (``pg_restore -f /dev/null``): catches truncation and corruption."""
    backup = as_file(backup)
    with backup.store.open_read(backup.name) as stream:
        local = backup.store.local_path(backup.name)
        run_tool(
            [pg_restore, "--file", os.devnull, *_named(local)],
            env=os.environ,
            log=log,
            what=f"backup file {backup}",
            stdout=subprocess.DEVNULL,
            source=None if local else stream,
        )


def dump_database(
    target: PgTarget,
    directory: str | Path | BackupStore,
    *,
    log: logging.Logger,
    prefix: str = DEFAULT_PREFIX,
    bin_dir: str | Path | None = None,
    server_major: int | None = None,
    now: dt.datetime | None = None,
    timeout: float | None = None,
) -> str:
    """``pg_dump -Fc`` of ``target`` into ``<directory>/<prefix><YYYYMMDD_HHMM>.dump`` (UTC); where it is.

    The file is created 0600 (where the store has modes) under a hidden temporary name, checked with
    ``pg_restore --list`` and only then renamed, so the freshness check never sees a dump still being
    written. On a local disk pg_dump writes the file by name (only then does it rewrite the TOC with data
    offsets); into an object store its stdout is streamed, never spooled on the worker.
    """
    store = as_store(directory)
    store.check(writable=True)
    pg_dump = resolve_tool("pg_dump", bin_dir=bin_dir, server_major=server_major)
    pg_restore = resolve_tool("pg_restore", bin_dir=pg_dump.parent)
    stem = f"{prefix}{(now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC):%Y%m%d_%H%M}"
    tmp = f".{stem}.{os.getpid()}.partial"
    started = time.monotonic()
    log.info("backing up %s with %s to %s", target.describe(), pg_dump, store.location)
    try:
        with store.open_write(tmp) as out, client_env(target) as env:
            local = store.local_path(tmp)  # created 0600 by open_write; pg_dump keeps that mode
            run_tool(
                [pg_dump, "--format=custom", "--no-password", *(["--file", *_named(local)] if local else [])],
                env=env,
                log=log,
                what=f"database {target.dbname!r}",
                timeout=timeout,
                sink=None if local else out,
            )
        toc = read_toc(BackupFile(store, tmp), pg_restore=pg_restore, log=log)
        final = store.publish(tmp, stem)
    except BaseException:
        store.remove(tmp)
        raise
    log.info(
        "backup %s written: %d TOC entries, %d tables with data, in %.1f s",
        store.describe(final),
        len(toc),
        len(tables_with_data(toc)),
        time.monotonic() - started,
    )
    return store.describe(final)


@dataclass(frozen=True)
class BackupVerdict:
    """What the freshness check concluded about the newest backup, and why."""

    fresh: bool
    reason: str
    backup: BackupFile | None = None
    age: dt.timedelta | None = None
    missing: list[str] = field(default_factory=list)

    @property
    def path(self) -> str | None:
        """Where the judged backup is (a path or a URL), or None when none was found."""
        return str(self.backup) if self.backup is not None else None


def judge_backup(
    directory: str | Path | BackupStore,
    *,
    max_age: dt.timedelta,
    log: logging.Logger,
    pattern: str = DEFAULT_PATTERN,
    must_contain: Sequence[str] = (),
    bin_dir: str | Path | None = None,
    verify_data: bool = True,
    now: dt.datetime | None = None,
) -> BackupVerdict:
    """Judge the newest file matching ``pattern``: young enough, readable by ``pg_restore``, complete.

    A missing directory or an unreadable newest file raises (waiting will not fix it); a stale,
    truncated or incomplete dump gives a verdict that is not fresh, with the reason. In an object store
    the table of contents and the data are read from the stream of the object.
    """
    store = as_store(directory)
    store.check(writable=False)
    found = store.find(pattern)
    if not found:
        return BackupVerdict(False, f"no file matching {pattern!r} in {store.location}")
    latest = max(found, key=lambda f: (f.modified, f.name))
    newest = BackupFile(store, latest.name)
    if not latest.regular:
        raise BackupFileError(f"cannot read backup file {newest}: not a regular file")
    age = (now or dt.datetime.now(dt.UTC)) - latest.modified
    if age > max_age:
        return BackupVerdict(False, f"{newest} is {age} old, more than max_age {max_age}", newest, age)
    pg_restore = resolve_tool("pg_restore", bin_dir=bin_dir)
    try:
        toc = read_toc(newest, pg_restore=pg_restore, log=log)
    except PgToolError as exc:
        return BackupVerdict(False, f"pg_restore --list cannot read {newest}: {exc}", newest, age)
    missing = missing_tables(toc, must_contain)
    if missing:
        reason = f"{newest} has no TABLE DATA for {', '.join(missing)} in its table of contents"
        return BackupVerdict(False, reason, newest, age, missing)
    if verify_data:
        try:
            read_all_data(newest, pg_restore=pg_restore, log=log)
        except PgToolError as exc:
            return BackupVerdict(False, f"{newest} is truncated or corrupt: {exc}", newest, age)
    checked = "every data block read" if verify_data else "data blocks not read"
    reason = (
        f"{newest} is {age} old (max_age {max_age}), {len(toc)} TOC entries, "
        f"TABLE DATA for {', '.join(must_contain) or 'no required table'}, {checked}"
    )
    return BackupVerdict(True, reason, newest, age)


def restore_dump(
    target: PgTarget,
    dump_path: str | Path | BackupFile,
    *,
    confirm: str,
    log: logging.Logger,
    bin_dir: str | Path | None = None,
    server_major: int | None = None,
    single_transaction: bool = True,
    timeout: float | None = None,
) -> None:
    """``pg_restore --clean --if-exists`` of ``dump_path`` into ``target``: the last resort, it loses data.

    Refuses before touching anything unless ``confirm`` equals the database name; the dump is read in
    full first, and restored in one transaction by default, so a bad dump cannot leave the database
    half-dropped. A dump in an object store is streamed to ``pg_restore`` (read three times: TOC, data,
    restore), never copied to the worker's disk.
    """
    backup = as_file(dump_path)
    if confirm != target.dbname:
        raise RestoreRefusedError(
            f"refusing to restore {backup} into database {target.dbname!r}: "
            f"the confirmation {confirm!r} must equal the database name"
        )
    local = backup.store.local_path(backup.name)
    if local is not None and not local.is_file():
        raise BackupFileError(f"cannot read backup file {backup}: no such file")
    pg_restore = resolve_tool("pg_restore", bin_dir=bin_dir, server_major=server_major)
    toc = read_toc(backup, pg_restore=pg_restore, log=log)
    read_all_data(backup, pg_restore=pg_restore, log=log)
    log.warning(
        "restoring %s (%d TOC entries) into %s: objects in the dump are dropped and recreated",
        backup,
        len(toc),
        target.describe(),
    )
    argv: list[str | Path] = [pg_restore, "--clean", "--if-exists", "--no-password", "--exit-on-error"]
    if single_transaction:
        argv.append("--single-transaction")
    argv += ["--dbname", psycopg.conninfo.make_conninfo(dbname=target.dbname)]
    started = time.monotonic()
    with client_env(target) as env, backup.store.open_read(backup.name) as stream:
        run_tool(
            [*argv, local] if local is not None else argv,
            env=env,
            log=log,
            what=f"database {target.dbname!r}",
            timeout=timeout,
            source=None if local is not None else stream,
        )
    log.warning(
        "restore of %s into %s finished in %.1f s", backup, target.describe(), time.monotonic() - started
    )
