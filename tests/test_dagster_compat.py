"""Pins the private Dagster APIs that `dagster_airpeer._dagster_compat` wraps: fails loudly when Dagster moves them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest

from dagster_airpeer import _dagster_compat as compat


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def test_sensor_timeout_is_dagsters_default_and_follows_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS", raising=False)
    monkeypatch.delenv("DAGSTER_GRPC_TIMEOUT_SECONDS", raising=False)
    assert compat.sensor_evaluation_timeout_seconds() == 60
    monkeypatch.setenv("DAGSTER_GRPC_TIMEOUT_SECONDS", "90")
    assert compat.sensor_evaluation_timeout_seconds() == 90
    monkeypatch.setenv("DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS", "120")
    assert compat.sensor_evaluation_timeout_seconds() == 120


def test_runless_events_are_stored_under_the_runless_run_id(instance: dg.DagsterInstance) -> None:
    key = dg.AssetKey(["a"])
    assert compat.latest_runless_storage_id(instance) is None
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, metadata={"n": 0}))
    first = compat.latest_runless_storage_id(instance)
    assert first is not None
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(asset_key=key, check_name="c", passed=False, metadata={"n": 1})
    )
    instance.report_runless_asset_event(dg.AssetObservation(asset_key=key))  # not an event airpeer stores
    after = list(compat.runless_asset_records_after(instance, first))
    assert len(after) == 1
    evaluation = after[0].event_log_entry.dagster_event.event_specific_data  # type: ignore[union-attr]
    assert isinstance(evaluation, dg.AssetCheckEvaluation) and evaluation.metadata["n"].value == 1
    assert compat.latest_runless_storage_id(instance) == after[0].storage_id
    since = datetime.now(timezone.utc) - timedelta(minutes=1)
    assert len(list(compat.runless_asset_records_since(instance, since))) == 2
    assert list(compat.runless_asset_records_since(instance, datetime.now(timezone.utc) + timedelta(1))) == []


def test_scans_page_through_more_than_one_page(
    instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compat, "_PAGE", 3)
    start = time.time() - 1
    for i in range(7):
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=dg.AssetKey(["p"]), metadata={"i": i})
        )
    records = list(compat.runless_asset_records_after(instance, 0))
    assert len(records) == 7 and [r.storage_id for r in records] == sorted(r.storage_id for r in records)
    since = datetime.fromtimestamp(start, tz=timezone.utc)
    assert len(list(compat.runless_asset_records_since(instance, since))) == 7
