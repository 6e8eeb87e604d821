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


class BackupError(RuntimeError):
    """A backup could not be taken, judged or restored."""


class BackupDirectoryError(BackupError):
    """The backup directory is missing, not a directory, or not writable."""


class BackupFileError(BackupError):
    """A backup file cannot be read (permissions, dangling link, not a file)."""


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


def _check_readable(path: Path) -> None:
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise BackupFileError(f"cannot read backup file {path}: {exc.strerror or exc}") from exc


def read_toc(path: Path, *, pg_restore: Path, log: logging.Logger) -> list[TocEntry]:
    """The dump's table of contents, via ``pg_restore --list`` (no database involved)."""
    _check_readable(path)
    done = run_tool([pg_restore, "--list", path], env=os.environ, log=log, what=f"backup file {path}")
    return parse_toc(done.stdout.decode("utf-8", "replace"))


def read_all_data(path: Path, *, pg_restore: Path, log: logging.Logger) -> None:
    """Read every data block of the dump (``pg_restore -f /dev/null``): catches truncation and corruption."""
    run_tool(
        [pg_restore, "--file", os.devnull, path],
        env=os.environ,
        log=log,
        what=f"backup file {path}",
        stdout=subprocess.DEVNULL,
    )


def _check_directory(directory: Path, *, writable: bool) -> None:
    if not directory.is_dir():
        raise BackupDirectoryError(f"backup directory {directory} does not exist or is not a directory")
    if writable and not os.access(directory, os.W_OK | os.X_OK):
        raise BackupDirectoryError(f"backup directory {directory} is not writable")


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp: Path, directory: Path, stem: str) -> Path:
    """Give the finished dump its final name without ever replacing an existing backup."""
    for n in range(1, 1000):
        final = directory / (f"{stem}.dump" if n == 1 else f"{stem}_{n}.dump")
        try:
            os.link(tmp, final)  # fails if ``final`` exists, unlike rename
        except FileExistsError:
            continue
        os.unlink(tmp)
        return final
    raise BackupError(f"no free backup file name for {stem} in {directory}")


def dump_database(
    target: PgTarget,
    directory: str | Path,
    *,
    log: logging.Logger,
    prefix: str = DEFAULT_PREFIX,
    bin_dir: str | Path | None = None,
    server_major: int | None = None,
    now: dt.datetime | None = None,
    timeout: float | None = None,
) -> Path:
    """``pg_dump -Fc`` of ``target`` into ``<directory>/<prefix><YYYYMMDD_HHMM>.dump`` (UTC); its path.

    The file is created 0600 under a hidden temporary name, checked with ``pg_restore --list`` and only
    then renamed, so the freshness check never sees a dump that is still being written.
    """
    folder = Path(directory)
    _check_directory(folder, writable=True)
    pg_dump = resolve_tool("pg_dump", bin_dir=bin_dir, server_major=server_major)
    pg_restore = resolve_tool("pg_restore", bin_dir=pg_dump.parent)
    stem = f"{prefix}{(now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC):%Y%m%d_%H%M}"
    tmp = folder / f".{stem}.{os.getpid()}.partial"
    started = time.monotonic()
    log.info("backing up %s with %s to %s", target.describe(), pg_dump, folder)
    # Created 0600 here; pg_dump then opens the existing file, which keeps that mode. pg_dump writes to
    # a named file rather than stdout because only then does it rewrite the TOC with data offsets.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        with client_env(target) as env:
            run_tool(
                [pg_dump, "--format=custom", "--no-password", "--file", tmp],
                env=env,
                log=log,
                what=f"database {target.dbname!r}",
                timeout=timeout,
            )
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        toc = read_toc(tmp, pg_restore=pg_restore, log=log)
        final = _publish(tmp, folder, stem)
        _fsync_directory(folder)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    size = final.stat().st_size
    log.info(
        "backup %s written: %.1f MiB, %d TOC entries, %d tables with data, in %.1f s",
        final,
        size / 2**20,
        len(toc),
        len(tables_with_data(toc)),
        time.monotonic() - started,
    )
    return final


@dataclass(frozen=True)
class BackupVerdict:
    """What the freshness check concluded about the newest backup, and why."""

    fresh: bool
    reason: str
    path: Path | None = None
    age: dt.timedelta | None = None
    missing: list[str] = field(default_factory=list)


def judge_backup(
    directory: str | Path,
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
    truncated or incomplete dump gives a verdict that is not fresh, with the reason.
    """
    folder = Path(directory)
    _check_directory(folder, writable=False)
    dated: list[tuple[float, Path]] = []
    for path in folder.glob(pattern):
        try:
            dated.append((path.stat().st_mtime, path))
        except OSError as exc:
            raise BackupFileError(f"cannot read backup file {path}: {exc.strerror or exc}") from exc
    if not dated:
        return BackupVerdict(False, f"no file matching {pattern!r} in {folder}")
    mtime, newest = max(dated)
    if not newest.is_file():
        raise BackupFileError(f"cannot read backup file {newest}: not a regular file")
    moment = now or dt.datetime.now(dt.UTC)
    age = moment - dt.datetime.fromtimestamp(mtime, dt.UTC)
    if age > max_age:
        return BackupVerdict(False, f"{newest} is {age} old, more than max_age {max_age}", newest, age)
    _check_readable(newest)
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
    dump_path: str | Path,
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
    half-dropped.
    """
    path = Path(dump_path)
    if confirm != target.dbname:
        raise RestoreRefusedError(
            f"refusing to restore {path} into database {target.dbname!r}: "
            f"the confirmation {confirm!r} must equal the database name"
        )
    if not path.is_file():
        raise BackupFileError(f"cannot read backup file {path}: no such file")
    pg_restore = resolve_tool("pg_restore", bin_dir=bin_dir, server_major=server_major)
    toc = read_toc(path, pg_restore=pg_restore, log=log)
    read_all_data(path, pg_restore=pg_restore, log=log)
    log.warning(
        "restoring %s (%d TOC entries) into %s: objects in the dump are dropped and recreated",
        path,
        len(toc),
        target.describe(),
    )
    argv: list[str | Path] = [pg_restore, "--clean", "--if-exists", "--no-password", "--exit-on-error"]
    if single_transaction:
        argv.append("--single-transaction")
    argv += ["--dbname", psycopg.conninfo.make_conninfo(dbname=target.dbname), path]
    started = time.monotonic()
    with client_env(target) as env:
        run_tool(argv, env=env, log=log, what=f"database {target.dbname!r}", timeout=timeout)
    log.warning(
        "restore of %s into %s finished in %.1f s", path, target.describe(), time.monotonic() - started
    )
