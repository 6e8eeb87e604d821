"""One private primary with a streaming replica for the whole session (see tests/private_cluster.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from tests.private_cluster import Pair, primary_with_replica


@pytest.fixture(scope="session")
def pair() -> Iterator[Pair]:
    # autovacuum looks at every database each second, so the wraparound test need not wait a minute
    with primary_with_replica(autovacuum_naptime="1s") as started:
        yield started


@pytest.fixture
def pair_db(pair: Pair) -> Iterator[str]:
    """A fresh database on the private primary (replicated like everything else), dropped afterwards."""
    name = f"expand_health_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pair.primary.dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield pair.primary.dsn.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(pair.primary.dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
