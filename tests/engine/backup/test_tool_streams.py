"""``run_tool`` with streams: what an object store hands the client tools (real processes, no database)."""

from __future__ import annotations

import io
import logging
import os
import time

import pytest

from airflow_provider_expand.engine.backup.pg_tools import PgToolError, run_tool

LOG = logging.getLogger("test.streams")
BIG = os.urandom(3 << 20) + b"end"  # more than the 1 MiB chunk and the pipe buffers


def test_a_stream_goes_through_the_tool_in_chunks() -> None:
    sink = io.BytesIO()
    run_tool(["cat"], env=os.environ, log=LOG, what="a stream", source=io.BytesIO(BIG), sink=sink)
    assert sink.getvalue() == BIG


def test_a_tool_that_stops_reading_early_is_fine() -> None:
    # like pg_restore --list on a stream: it reads the table of contents and exits
    done = run_tool(["head", "-c", "10"], env=os.environ, log=LOG, what="a stream", source=io.BytesIO(BIG))
    assert done.stdout == BIG[:10]


class _Broken(io.RawIOBase):
    """An object store connection that dies after the first chunk."""

    def __init__(self) -> None:
        self.calls = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self.calls += 1
        if self.calls > 1:
            raise ConnectionError("the store went away")
        return b"x" * 100


def test_a_failing_source_fails_the_tool_run_with_the_cause() -> None:
    with pytest.raises(PgToolError, match="reading the input failed: the store went away"):
        run_tool(["cat"], env=os.environ, log=LOG, what="a stream", source=_Broken(), sink=io.BytesIO())  # type: ignore[arg-type]


def test_a_timeout_kills_the_tool_and_says_so() -> None:
    started = time.monotonic()
    with pytest.raises(PgToolError, match=r"sleep for a test did not finish within 0.5 s"):
        run_tool(["sleep", "30"], env=os.environ, log=LOG, what="a test", timeout=0.5)
    assert time.monotonic() - started < 10


def test_stderr_and_the_exit_code_name_the_failure() -> None:
    with pytest.raises(PgToolError, match=r"sh failed for a test \(exit 3\): boom"):
        run_tool(["sh", "-c", "echo boom >&2; exit 3"], env=os.environ, log=LOG, what="a test")
