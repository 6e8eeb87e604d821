"""Batch size adaptation: down at once past the target time per batch, up by at most 2x, within bounds."""

from __future__ import annotations

import datetime as dt
import itertools

from airflow_provider_expand.engine.backfill.pacing import BatchSizer

TARGET = dt.timedelta(milliseconds=100)


def test_grows_and_shrinks_towards_the_target_within_bounds() -> None:
    sizer = BatchSizer(1_000, TARGET, low=100, high=20_000)
    # 1,000 rows in 10 ms: the ideal is 10,000 rows, but one step moves at most halfway to 2x.
    assert sizer.observe(1_000, 0.010) == 1_500
    sizes = [sizer.observe(sizer.size, sizer.size * 0.00001) for _ in range(20)]  # 10 µs per row
    assert abs(sizes[-1] - 10_000) <= 1  # settles where a batch takes 100 ms
    assert all(b >= a for a, b in itertools.pairwise(sizes))
    sizer.size = 10_000
    assert sizer.observe(10_000, 0.4) == 2_500  # a batch 4x over the target: straight down to fit it
    sizer.size = 10_000
    for _ in range(30):
        sizer.observe(sizer.size, 10.0)
    assert sizer.size == 100  # never below the floor
    for _ in range(30):
        sizer.observe(sizer.size, 0.0001)
    assert sizer.size == 20_000  # nor above the ceiling


def test_fixed_without_a_target_and_ignores_a_short_last_window() -> None:
    fixed = BatchSizer(500, None, low=1, high=100_000)
    assert fixed.observe(500, 5.0) == 500
    sizer = BatchSizer(5_000, TARGET, low=100, high=100_000)
    assert sizer.observe(12, 0.001) == 5_000  # the range's last, short window says nothing
    assert BatchSizer(50, TARGET, low=100, high=1_000).size == 100  # the start is clamped too
