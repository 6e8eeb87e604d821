"""``backup.directory`` as a store every worker can reach: a local absolute path, or an Airflow object
storage URL (``ObjectStoragePath``: ``s3://<conn_id>@bucket/prefix``, ``file:///path``, ...).

With several workers, ``pg_dump`` and the freshness check may run on different machines: a bucket is the
folder they all see. The engine gets the folder as a :class:`~engine.backup.store.BackupStore` of
file-like streams and never learns about Airflow.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import urlsplit

from airflow.sdk import BaseHook, ObjectStoragePath

from airflow_provider_expand.engine.backup.store import (
    BackupDirectoryError,
    BackupError,
    BackupFile,
    BackupFileError,
    BackupStore,
    LocalDirectory,
    StoredFile,
    as_file,
    is_url,
    matches,
)

SPEC_KEY = "backup.directory"


class BackupLocationError(BackupDirectoryError):
    """``backup.directory`` names a store that cannot be used (unknown connection, unknown scheme)."""


class ObjectStorageDirectory:
    """A folder in an object store, through Airflow's ``ObjectStoragePath`` (and its connection)."""

    def __init__(self, url: str, root: ObjectStoragePath) -> None:
        self.root = root
        self._url = url

    @property
    def location(self) -> str:
        return self._url

    def describe(self, name: str) -> str:
        return f"{self._url.rstrip('/')}/{name}"

    def local_path(self, name: str) -> Path | None:
        return None  # always a stream, even for file://: the code path every store takes

    def _failed(self, what: str, exc: Exception) -> BackupDirectoryError:
        return BackupDirectoryError(f"{SPEC_KEY} {self._url}: {what}: {type(exc).__name__}: {exc}")

    def check(self, *, writable: bool) -> None:
        try:
            if self.root.protocol == "file":
                if not self.root.is_dir():
                    raise BackupDirectoryError(f"{SPEC_KEY} {self._url} does not exist or is not a directory")
            elif self.root.bucket and not self.root.fs.exists(self.root.bucket):
                raise BackupDirectoryError(
                    f"{SPEC_KEY} {self._url}: bucket {self.root.bucket!r} does not exist"
                )
        except BackupError:
            raise
        except Exception as exc:
            raise self._failed("cannot reach the store", exc) from exc

    def find(self, pattern: str) -> list[StoredFile]:
        fs = self.root.fs
        try:
            fs.invalidate_cache()  # a listing cached by s3fs would hide a backup taken since the last poke
            try:
                entries = fs.ls(self.root.path, detail=True)  # one request, sizes and times included
            except FileNotFoundError:  # an empty prefix: no backup yet
                return []
            found = [_stored(entry) for entry in entries]
        except Exception as exc:
            raise self._failed("cannot list the backups", exc) from exc
        return [f for f in found if matches(f.name, pattern)]

    @contextlib.contextmanager
    def open_read(self, name: str) -> Iterator[BinaryIO]:
        try:
            fh = (self.root / name).open("rb")
        except Exception as exc:
            raise BackupFileError(f"cannot read backup file {self.describe(name)}: {exc}") from exc
        with fh:
            yield cast(BinaryIO, fh)

    @contextlib.contextmanager
    def open_write(self, name: str) -> Iterator[BinaryIO]:
        path = self.root / name
        try:
            if path.exists():
                raise FileExistsError(name)
            fh = path.open("wb")
            if path.protocol == "file":
                path.fs.chmod(path.path, 0o600)  # before a byte is written; an object store has no modes
        except Exception as exc:
            raise BackupDirectoryError(f"cannot create {self.describe(name)}: {exc}") from exc
        with fh:
            yield cast(BinaryIO, fh)

    def publish(self, name: str, stem: str) -> str:
        source = self.root / name
        for n in range(1, 1000):
            final = f"{stem}.dump" if n == 1 else f"{stem}_{n}.dump"
            target = self.root / final
            if target.exists():
                continue
            # a rename where the store has one (file), else a server-side copy and delete (S3); the
            # partial name never matches the freshness check's pattern, so no one reads it half-written
            source.fs.mv(source.path, target.path)
            return final
        raise BackupError(f"no free backup file name for {stem} in {self._url}")

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / name).unlink()


def _stored(entry: dict[str, Any]) -> StoredFile:
    """A listing entry as the engine sees it: local filesystems say ``mtime``, S3 ``LastModified``."""
    name = str(entry["name"]).rstrip("/").rpartition("/")[2]
    if "mtime" in entry:
        modified = dt.datetime.fromtimestamp(float(entry["mtime"]), dt.UTC)
    else:
        modified = entry["LastModified"].astimezone(dt.UTC)
    return StoredFile(name, modified, regular=entry.get("type") == "file")


def _check_connection(url: str, conn_id: str) -> None:
    try:
        BaseHook.get_connection(conn_id)
    except Exception as exc:
        # without this check the S3 filesystem falls back to whatever credentials the worker has
        raise BackupLocationError(
            f"{SPEC_KEY} {url}: Airflow connection {conn_id!r} does not exist "
            f"(add it, e.g. as AIRFLOW_CONN_{conn_id.upper()}, or fix the conn id in the URL)"
        ) from exc


def backup_store(directory: str) -> BackupStore:
    """The store for ``backup.directory``: a :class:`LocalDirectory` for a path, else the object store."""
    if not is_url(directory):
        return LocalDirectory(directory)
    conn_id = urlsplit(directory).netloc.rpartition("@")[0]  # where ObjectStoragePath takes it from
    if conn_id:
        _check_connection(directory, conn_id)
    try:
        root = ObjectStoragePath(directory)
        root.fs  # noqa: B018 - resolves the scheme's filesystem now, so an unknown one fails here
    except Exception as exc:
        raise BackupLocationError(
            f"{SPEC_KEY} {directory}: no object storage for scheme {urlsplit(directory).scheme!r}: {exc}"
        ) from exc
    return ObjectStorageDirectory(directory, root)


def backup_file(path: str) -> BackupFile:
    """A file given as ``<backup.directory>/<name>`` (the restore DAG's dump), in its store."""
    if not is_url(path):
        return as_file(path)
    folder, _, name = path.rstrip("/").rpartition("/")
    if not name or folder.endswith(":/"):
        raise BackupFileError(f"cannot read backup file {path}: not a path to a file")
    return BackupFile(backup_store(folder), name)
