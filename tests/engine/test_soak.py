"""When the soak ends, with and without a contract window."""

from __future__ import annotations

import datetime as dt

import pendulum
import pytest

from airflow_provider_expand.engine.soak import ContractWindow, soak_until

UTC = dt.UTC


def test_soak_counts_from_base() -> None:
    base = dt.datetime(2026, 1, 1, 10, 30, tzinfo=UTC)
    assert soak_until(base, dt.timedelta(hours=24)) == pendulum.datetime(2026, 1, 2, 10, 30)


@pytest.mark.parametrize(
    ("window", "base_hour", "expected"),
    [
        ("02:00-05:00", 10, pendulum.datetime(2026, 1, 3, 2, 0)),  # 10:00 next day -> following night
        ("02:00-05:00", 3, pendulum.datetime(2026, 1, 2, 3, 0)),  # already inside
        ("22:00-02:00", 1, pendulum.datetime(2026, 1, 2, 1, 0)),  # wraps midnight, inside
        ("22:00-02:00", 12, pendulum.datetime(2026, 1, 2, 22, 0)),  # same day's window
    ],
)
def test_contract_window(window: str, base_hour: int, expected: pendulum.DateTime) -> None:
    base = dt.datetime(2026, 1, 1, base_hour, 0, tzinfo=UTC)
    assert soak_until(base, dt.timedelta(hours=24), ContractWindow.parse(window)) == expected


@pytest.mark.parametrize("bad", ["2-5", "25:00-05:00", "02:00-02:00", "02:60-03:00"])
def test_bad_window(bad: str) -> None:
    with pytest.raises(ValueError, match="contract window"):
        ContractWindow.parse(bad)
