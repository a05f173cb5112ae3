"""Airflow 2.11 datasets / 3.3 assets against real Airflow: an event produced by a task outlet and one posted
through Airflow's API (v1 POST /datasets/events, v2 POST /assets/events) are each recorded exactly once,
across two consecutive polls and across a restart from the serialized state."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from dagster_airpeer import AirflowBasicAuthBackend, AirflowInstance
from dagster_airpeer.airflow.assets import find_asset, list_airflow_assets, post_asset_event
from dagster_airpeer.events import COMPLETION_METADATA_KEY
from dagster_airpeer.observe.airflow_assets import (
    airflow_asset_key,
    airflow_asset_specs,
    poll_airflow_asset_events,
)

pytestmark = pytest.mark.integration

PRODUCER, CONSUMER = "airpeer_dataset_producer", "airpeer_dataset_consumer"
URI = "file:///tmp/airpeer-test/data_set.v1/out.csv"


def _instance(stack: Any) -> AirflowInstance:
    return AirflowInstance(
        auth_backend=AirflowBasicAuthBackend(stack.url, stack.username, stack.password),
        name="assets_it",
        max_retries=0,  # a retried POST could record a second event
    )


def _wait_for_asset(instance: AirflowInstance, timeout: float = 120) -> Any:
    end = time.monotonic() + timeout
    while True:
        assets = list_airflow_assets(instance)
        asset = next((a for a in assets if a.uri.endswith("data_set.v1/out.csv")), None)
        if asset is not None and asset.producing_tasks and asset.consuming_dags:
            return asset
        assert time.monotonic() < end, f"asset not listed with its producer and consumer: {assets}"
        time.sleep(1)


def test_outlet_and_api_events_each_recorded_once(airflow: Any) -> None:
    airflow.wait_for_dags([PRODUCER, CONSUMER])
    instance = _instance(airflow)
    asset = _wait_for_asset(instance)
    assert asset.producing_tasks == ((PRODUCER, "produce"),)
    assert asset.consuming_dags == (CONSUMER,)
    assert find_asset([asset], uri=asset.uri) == asset
    key = airflow_asset_key("assets_it", uri=asset.uri, name=asset.name)
    if instance.api_version == "v1":
        assert asset.name == asset.uri and len(key.path) == 3
    else:
        assert asset.name == "airpeer_test_dataset" and len(key.path) == 4

    # Lineage: the asset depends on its producing DAG, the consumer DAG on it.
    import dagster as dg

    dag_specs = {d: dg.AssetSpec(key=["assets_it", "dag", d]) for d in (PRODUCER, CONSUMER)}
    specs, updated = airflow_asset_specs("assets_it", [asset], dag_specs=dag_specs)
    assert [s.key for s in specs] == [key]
    assert {d.asset_key for d in specs[0].deps} == {dag_specs[PRODUCER].key}
    assert {d.asset_key for d in updated[CONSUMER].deps} == {key}

    # Start from now: earlier events (other tests, earlier runs of this one) are behind the lookback.
    tick = poll_airflow_asset_events(instance, None, lookback=dg_seconds(1))
    state = tick.state_doc

    run = instance.trigger_dag_run(PRODUCER)
    assert instance.wait_for_dag_run(PRODUCER, run.run_id, timeout=180).state == "success"
    posted = post_asset_event(instance, asset, extra={"airpeer_test": run.run_id})
    assert posted.from_rest_api and (posted.extra or {}).get("airpeer_test") == run.run_id

    recorded: list[Any] = []
    end = time.monotonic() + 120
    while True:
        tick = poll_airflow_asset_events(instance, state)
        recorded += tick.airflow_events
        state = json.loads(json.dumps(tick.state_doc))  # a restart: only the JSON survives
        ours = [e for e in recorded if e.source_run_id == run.run_id or e.id == posted.id]
        if len(ours) >= 2:
            break
        assert time.monotonic() < end, f"events not seen: {recorded}"
        time.sleep(1)
    outlet = [e for e in recorded if e.source_run_id == run.run_id]
    assert len(outlet) == 1 and outlet[0].source_task_id == "produce" and outlet[0].source_dag_id == PRODUCER
    assert [e.id for e in recorded].count(posted.id) == 1

    # Two more consecutive polls, the second from a fresh instance (a restart): nothing is recorded again.
    again = poll_airflow_asset_events(instance, state)
    restarted = poll_airflow_asset_events(_instance(airflow), json.loads(json.dumps(again.state_doc)))
    repeated = {e.id for e in [*again.airflow_events, *restarted.airflow_events]}
    assert outlet[0].id not in repeated and posted.id not in repeated

    def value(m: Any, label: str) -> Any:
        return getattr(m.metadata[label], "value", m.metadata[label])

    mats = [m for t in (tick,) for m in t.events]
    assert all(m.asset_key == key for m in mats)
    assert all(str(value(m, COMPLETION_METADATA_KEY)).startswith("assets_it:") for m in mats)


def dg_seconds(seconds: float) -> Any:
    from datetime import timedelta

    return timedelta(seconds=seconds)
