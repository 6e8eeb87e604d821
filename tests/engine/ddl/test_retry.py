"""The one lock-retry policy: each caller's backoff and one error class for both the DDL runner and the
index builds."""

from __future__ import annotations

from datetime import timedelta

import pytest

from airflow_provider_expand.engine import errors
from airflow_provider_expand.engine.ddl import phase
from airflow_provider_expand.engine.ddl.retry import LockRetriesExhaustedError, LockRetryPolicy
from airflow_provider_expand.engine.index import build


def test_the_index_policy_backs_off_from_250_ms_never_below_half() -> None:
    policy = LockRetryPolicy.for_index(timedelta(seconds=1), 3)
    assert (policy.lock_timeout, policy.retries) == (timedelta(seconds=1), 3)
    first = [policy.backoff(1) for _ in range(200)]
    assert all(timedelta(milliseconds=125) <= w <= timedelta(milliseconds=250) for w in first)
    assert all(timedelta(seconds=15) <= policy.backoff(20) <= timedelta(seconds=30) for _ in range(50))
    with pytest.raises(ValueError, match="jitter_floor"):
        LockRetryPolicy(timedelta(seconds=1), 1, jitter_floor=1.5)


def test_one_exhausted_error_for_phases_and_index_builds() -> None:
    assert phase.LockRetriesExhaustedError is build.LockRetriesExhaustedError is LockRetriesExhaustedError
    error = LockRetriesExhaustedError("x", tries=3)
    assert isinstance(error, errors.ConcurrencyConflictError) and error.sqlstate == "55P03"
