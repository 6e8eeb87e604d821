"""Where backups are kept: a local directory here, any store of file-like streams through the hooks layer.

The engine reads and writes backups only through :class:`BackupStore`, so an object store (S3, GCS, ...)
plugs in from ``hooks/backup_store.py`` (Airflow's ``ObjectStoragePath``) without the engine importing
Airflow. A store on the local disk also gives the client tools a path (``local_path``): ``pg_dump --file``
then rewrites the table of contents with data offsets, which a stream cannot have.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fnmatch
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from airflow_provider_expand.engine.errors import DefinitiveError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(location: str) -> bool:
    """Whether ``location`` is a URL (``s3://...``, ``file://...``) rather than a local path."""
    return bool(_URL.match(location))


class BackupError(DefinitiveError):
    """A backup could not be taken, judged or restored."""


class BackupDirectoryError(BackupError):
    """The backup directory is missing, not a directory, not writable, or its store cannot be reached."""


class BackupFileError(BackupError):
    """A backup file cannot be read (permissions, dangling link, not a file)."""


@dataclass(frozen=True)
class StoredFile:
    """A file in a store: its name there and when it was last written (UTC)."""

    name: str
    modified: dt.datetime
    regular: bool = True  # False: a directory or device matching the pattern, which cannot be a backup


@runtime_checkable
class BackupStore(Protocol):
    """A flat folder of backup files, named by file name; what the engine needs of it, nothing more."""

    @property
    def location(self) -> str:
        """The folder, as the spec names it (a path or a URL without credentials), for messages."""
        ...

    def describe(self, name: str) -> str:
        """Where ``name`` is, for messages and the task's XCom (``<location>/<name>``)."""
        ...

    def local_path(self, name: str) -> Path | None:
        """A path the client tools can open themselves, or None: they read and write a stream."""
        ...

    def check(self, *, writable: bool) -> None:
        """Raise :class:`BackupDirectoryError` unless the folder exists (and can be written to)."""
        ...

    def find(self, pattern: str) -> list[StoredFile]:
        """The files whose name matches the glob ``pattern``."""
        ...

    def open_read(self, name: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """``name`` for reading, from its start; :class:`BackupFileError` if it cannot be read."""
        ...

    def open_write(self, name: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """A new private file ``name`` (mode 0600 where the store has modes), created exclusively."""
        ...

    def publish(self, name: str, stem: str) -> str:
        """Give the finished file ``name`` the final name ``<stem>.dump`` (or ``<stem>_N.dump``), never
        replacing an existing backup; returns the final name."""
        ...

    def remove(self, name: str) -> None:
        """Delete ``name`` if it is there (a partial file after a failure)."""
        ...


@dataclass(frozen=True)
class BackupFile:
    """One file in a store: what the freshness check found, or what the restore is given."""

    store: BackupStore
    name: str

    def __str__(self) -> str:
        return self.store.describe(self.name)


class LocalDirectory:
    """A directory on this machine (or a mount every worker shares): the spec's absolute path."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory)

    @property
    def location(self) -> str:
        return str(self.path)

    def describe(self, name: str) -> str:
        return str(self.path / name)

    def local_path(self, name: str) -> Path:
        return self.path / name

    def check(self, *, writable: bool) -> None:
        if not self.path.is_dir():
            raise BackupDirectoryError(f"backup directory {self.path} does not exist or is not a directory")
        if writable and not os.access(self.path, os.W_OK | os.X_OK):
            raise BackupDirectoryError(f"backup directory {self.path} is not writable")

    def find(self, pattern: str) -> list[StoredFile]:
        found: list[StoredFile] = []
        for path in self.path.glob(pattern):
            try:
                mtime = path.stat().st_mtime
            except OSError as exc:  # a dangling link, a file we may not stat
                raise BackupFileError(f"cannot read backup file {path}: {exc.strerror or exc}") from exc
            found.append(StoredFile(path.name, dt.datetime.fromtimestamp(mtime, dt.UTC), path.is_file()))
        return found

    @contextlib.contextmanager
    def open_read(self, name: str) -> Iterator[BinaryIO]:
        path = self.path / name
        try:
            fh = path.open("rb")
        except OSError as exc:
            raise BackupFileError(f"cannot read backup file {path}: {exc.strerror or exc}") from exc
        with fh:
            yield fh

    @contextlib.contextmanager
    def open_write(self, name: str) -> Iterator[BinaryIO]:
        fd = os.open(self.path / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())

    def publish(self, name: str, stem: str) -> str:
        tmp = self.path / name
        for n in range(1, 1000):
            final = f"{stem}.dump" if n == 1 else f"{stem}_{n}.dump"
            try:
                os.link(tmp, self.path / final)  # fails if it exists, unlike rename
            except FileExistsError:
                continue
            os.unlink(tmp)
            fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            return final
        raise BackupError(f"no free backup file name for {stem} in {self.path}")

    def remove(self, name: str) -> None:
        (self.path / name).unlink(missing_ok=True)


def as_store(directory: str | Path | BackupStore) -> BackupStore:
    """A store as given, or the local directory at a path (the engine never parses URLs: hooks do)."""
    if isinstance(directory, BackupStore):
        return directory
    if isinstance(directory, str) and is_url(directory):
        raise BackupDirectoryError(
            f"backup directory {directory} is a URL: open it with hooks.backup_store.backup_store() "
            "(Airflow object storage), not as a local path"
        )
    return LocalDirectory(directory)


def as_file(path: str | Path | BackupFile) -> BackupFile:
    """A file in a store as given, or the local file at ``path``."""
    if isinstance(path, BackupFile):
        return path
    local = Path(path)
    return BackupFile(LocalDirectory(local.parent), local.name)


def matches(name: str, pattern: str) -> bool:
    """Glob match of a bare file name (what object stores list), as ``Path.glob`` does in a folder."""
    return fnmatch.fnmatchcase(name, pattern)
