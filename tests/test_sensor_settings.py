"""The sensor's settings: the hard deadline stays under Dagster's sensor timeout, the late-commit window above it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from dagster_airpeer.sensor import SensorSettings


def test_the_hard_deadline_stays_under_dagsters_default_sensor_timeout() -> None:
    # Before #13.1, the largest budget (40 s) gave a 70 s deadline, past Dagster's 60 s.
    settings = SensorSettings(tick_time_budget_seconds=40)
    assert settings.sensor_timeout_seconds == 60
    assert settings.hard_deadline_seconds <= 60 - 15
    assert SensorSettings().hard_deadline_seconds == 38  # the default budget keeps its 30 s for the last page


def test_the_deadline_follows_the_timeout_in_force(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS", "180")
    settings = SensorSettings(tick_time_budget_seconds=120)
    assert settings.sensor_timeout_seconds == 180
    assert settings.hard_deadline_seconds == 150
    monkeypatch.setenv("DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS", "30")
    settings = SensorSettings(tick_time_budget_seconds=10, late_commit_window=timedelta(minutes=1))
    assert settings.hard_deadline_seconds == 15


def test_a_budget_the_timeout_cannot_hold_names_the_setting_and_the_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValueError, match=r"tick_time_budget_seconds must be in \(0, 40\].*60 s") as excinfo:
        SensorSettings(tick_time_budget_seconds=41)
    assert "DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS" in str(excinfo.value)
    monkeypatch.setenv("DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS", "30")
    with pytest.raises(ValueError, match=r"must be in \(0, 10\]"):
        SensorSettings(tick_time_budget_seconds=11)
    monkeypatch.setenv("DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS", "20")
    with pytest.raises(ValueError, match=r"DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS.*at least 21"):
        SensorSettings(tick_time_budget_seconds=1)


@pytest.mark.parametrize("window", [timedelta(0), timedelta(seconds=30), timedelta(seconds=52)])
def test_a_late_commit_window_below_the_minimum_is_refused(window: timedelta) -> None:
    # Before #13.3 a window of 0 was accepted.
    with pytest.raises(ValueError, match=r"late_commit_window must be at least 53 s .*hard deadline of 38 s"):
        SensorSettings(late_commit_window=window)


def test_the_minimum_window_follows_the_deadline() -> None:
    assert SensorSettings(late_commit_window=timedelta(seconds=53)).min_late_commit_window_seconds == 53
    with pytest.raises(ValueError, match="at least 60 s"):
        SensorSettings(tick_time_budget_seconds=40, late_commit_window=timedelta(seconds=59))
    SensorSettings(tick_time_budget_seconds=1, late_commit_window=timedelta(seconds=46))
