"""Mappings at load: lineage, task metadata, checks against Airflow, snapshot fallback, instance scoping.

Airflow is the scripted fake of tests/airflow/airflow_fakes.py (REST v1 and v2 shapes); the same behaviours
against a real Airflow 2.11 and 3.3 are in test_observe_integration.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest

from dagster_airpeer import (
    AirflowBasicAuthBackend,
    AirflowConfigError,
    AirflowInstance,
    Dag,
    Task,
    assets_with_dag_mappings,
    assets_with_multiple_task_mappings,
    assets_with_task_mappings,
    build_defs_from_airflow_instance,
)
from dagster_airpeer.observe import INSTANCE_KEY, fetch_task_lists, observe_definitions
from dagster_airpeer.snapshot import AirflowSnapshot, snapshot_path
from tests.airflow.airflow_fakes import (
    URL,
    FakeAirflow,
    dag_v1,
    dag_v2,
    json_response,
    make_instance,
    task_v1,
    task_v2,
)

REBUILD_TASKS = {"load": ["build"], "build": ["export"], "export": []}


class Airflow:
    """A fake Airflow (v1 or v2) serving DAGs and their task lists; counts task-list requests per DAG."""

    def __init__(self, version: str, dags: dict[str, dict[str, list[str]]], **task_over: Any) -> None:
        self.version = version
        self.fake = FakeAirflow(version)
        self.dags = dags
        self.task_over = task_over
        self.fake.add("GET", f"/api/{version}/dags", self._dags)
        for dag_id in dags:
            self.fake.add("GET", f"/api/{version}/dags/{dag_id}/tasks", self._tasks(dag_id))

    def _dags(self, request: httpx.Request) -> httpx.Response:
        make = dag_v2 if self.version == "v2" else dag_v1
        bodies = [make(dag_id) for dag_id in sorted(self.dags)]
        return json_response(200, {"dags": bodies, "total_entries": len(bodies)})

    def _tasks(self, dag_id: str) -> Any:
        make = task_v2 if self.version == "v2" else task_v1

        def handler(request: httpx.Request) -> httpx.Response:
            tasks = [
                make(task_id, downstream, **self.task_over.get(task_id, {}))
                for task_id, downstream in self.dags[dag_id].items()
            ]
            return json_response(200, {"tasks": tasks, "total_entries": len(tasks)})

        return handler

    def task_requests(self) -> list[str]:
        return sorted(r.url.path.split("/")[4] for r in self.fake.requests if r.url.path.endswith("/tasks"))

    def instance(self, name: str = "test_airflow") -> AirflowInstance:
        if name == "test_airflow":
            return make_instance(self.fake)
        return AirflowInstance(
            AirflowBasicAuthBackend(URL, self.fake.username, self.fake.password),
            name=name,
            transport=self.fake.transport(),
        )


def _down(name: str = "test_airflow") -> AirflowInstance:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    return AirflowInstance(
        AirflowBasicAuthBackend(URL, "admin", "s3cret-pw"),
        name=name,
        max_retries=0,
        transport=httpx.MockTransport(refuse),
    )


@dg.multi_asset(
    specs=[
        dg.AssetSpec("stg_customers", deps=[["raw", "customers"]]),
        dg.AssetSpec("customers", deps=["stg_customers"]),
    ],
    check_specs=[dg.AssetCheckSpec("unique_id", asset="customers")],
)
def dbt_like():  # type: ignore[no-untyped-def]  # a multi-output op must not be annotated None
    """Stands for a @dbt_assets multi-asset."""


def _tutorial_mappings(dag_id: str = "rebuild", **renamed: str) -> Sequence[Any]:
    return assets_with_task_mappings(
        dag_id=dag_id,
        task_mappings={
            renamed.get("load", "load"): [
                dg.AssetSpec(["raw", "customers"]),
                dg.AssetSpec(["raw", "orders"]),
            ],
            renamed.get("build", "build"): [dbt_like],
            renamed.get("export", "export"): [dg.AssetSpec("customers_csv", deps=["customers"])],
        },
    )


def _build(instance: AirflowInstance, tmp_path: Path, assets: Sequence[Any], **kwargs: Any) -> dg.Definitions:
    return build_defs_from_airflow_instance(
        airflow_instance=instance, snapshot_dir=tmp_path, defs=dg.Definitions(assets=assets), **kwargs
    )


def _deps(graph: Any, key: dg.AssetKey) -> set[str]:
    return {k.to_user_string() for k in graph.get(key).parent_keys}


DAG_KEY = dg.AssetKey(["test_airflow", "dag", "rebuild"])


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_lineage_and_task_metadata(version: str, tmp_path: Path) -> None:
    airflow = Airflow(version, {"rebuild": REBUILD_TASKS, "other": {"only": []}})
    defs = _build(airflow.instance(), tmp_path, _tutorial_mappings())
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    # The DAG depends on its leaf mapped assets only; mapped assets keep the deps their user declared.
    assert _deps(graph, DAG_KEY) == {"customers_csv", "raw/orders"}
    assert _deps(graph, dg.AssetKey("customers_csv")) == {"customers"}
    assert _deps(graph, dg.AssetKey("stg_customers")) == {"raw/customers"}
    assert _deps(graph, dg.AssetKey(["test_airflow", "dag", "other"])) == set()
    assert dg.AssetCheckKey(dg.AssetKey("customers"), "unique_id") in graph.asset_check_keys

    meta = graph.get(dg.AssetKey("customers")).metadata
    assert meta["airflow/dag_id"] in ("rebuild", dg.TextMetadataValue("rebuild"))
    assert meta["airflow/task_id"] in ("build", dg.TextMetadataValue("build"))
    assert meta["airflow/operator"] in ("PythonOperator", dg.TextMetadataValue("PythonOperator"))
    url = meta["airflow/task_url"].value
    assert url == (
        f"{URL}/dags/rebuild/grid?task_id=build" if version == "v1" else f"{URL}/dags/rebuild/tasks/build"
    )
    assert meta[INSTANCE_KEY] in ("test_airflow", dg.TextMetadataValue("test_airflow"))
    # One task-list request, for the one DAG with task mappings.
    assert airflow.task_requests() == ["rebuild"]


def test_mapped_expand_task_is_fine_to_map(tmp_path: Path) -> None:
    airflow = Airflow("v2", {"rebuild": REBUILD_TASKS}, build={"is_mapped": True, "retries": 2.0})
    defs = _build(airflow.instance(), tmp_path, _tutorial_mappings())
    meta = defs.resolve_asset_graph().get(dg.AssetKey("customers")).metadata
    assert meta["airflow/task_is_mapped"] in (True, dg.BoolMetadataValue(True))
    assert meta["airflow/task_retries"] in (2, dg.IntMetadataValue(2))


def test_unknown_dag_and_task_are_named_with_the_closest_names(tmp_path: Path) -> None:
    airflow = Airflow("v2", {"rebuild": REBUILD_TASKS, "rebuild_orders": {"x": []}, "unrelated": {"x": []}})
    mapped = [
        *_tutorial_mappings(export="exprot"),
        *assets_with_task_mappings(dag_id="rebuilt", task_mappings={"load": [dg.AssetSpec("elsewhere")]}),
    ]
    with pytest.raises(AirflowConfigError) as excinfo:
        _build(airflow.instance(), tmp_path, mapped)
    message = str(excinfo.value)
    assert "2 asset mapping(s)" in message and "'test_airflow'" in message
    assert "DAG 'rebuilt' (mapped to 'elsewhere')" in message and "Closest DAG ids: 'rebuild'" in message
    assert "Task 'exprot' (mapped to 'customers_csv') is not in DAG 'rebuild'" in message
    assert "Closest task ids of DAG 'rebuild': 'export'" in message
    assert "s3cret" not in message
    # Tasks are listed only for listed DAGs with task mappings: none for the unknown one.
    assert airflow.task_requests() == ["rebuild"]


def test_nothing_close_lists_the_names_that_exist(tmp_path: Path) -> None:
    airflow = Airflow("v1", {"rebuild": REBUILD_TASKS})
    mapped = assets_with_task_mappings(dag_id="rebuild", task_mappings={"zzz": [dg.AssetSpec("a")]})
    with pytest.raises(
        AirflowConfigError,
        match="None is close; the task ids of DAG 'rebuild' are: 'build', 'export', 'load'",
    ):
        _build(airflow.instance(), tmp_path, mapped)


def test_a_dag_left_out_by_the_selector_is_an_error(tmp_path: Path) -> None:
    airflow = Airflow("v2", {"rebuild": REBUILD_TASKS, "other": {"x": []}})
    with pytest.raises(AirflowConfigError, match=r"DAG 'rebuild' .* is left out by dag_selector_fn"):
        _build(
            airflow.instance(), tmp_path, _tutorial_mappings(), dag_selector_fn=lambda d: d.dag_id == "other"
        )


def test_dag_mappings_need_no_task_list(tmp_path: Path) -> None:
    airflow = Airflow("v1", {"rebuild": REBUILD_TASKS})
    mapped = assets_with_dag_mappings(
        dag_mappings={
            "rebuild": [dg.AssetSpec(["raw", "customers"]), dbt_like, dg.AssetSpec("csv", deps=["customers"])]
        }
    )
    defs = _build(airflow.instance(), tmp_path, mapped)
    graph = defs.resolve_asset_graph()
    assert _deps(graph, DAG_KEY) == {"csv"}
    meta = graph.get(dg.AssetKey("csv")).metadata
    assert meta["airflow/dag_url"].value == f"{URL}/dags/rebuild/grid"
    assert "airflow/task_id" not in meta
    assert airflow.task_requests() == []


def test_peering_without_mappings_lists_no_tasks(tmp_path: Path) -> None:
    airflow = Airflow("v2", {"rebuild": REBUILD_TASKS})

    @dg.asset
    def unrelated() -> None: ...

    defs = _build(airflow.instance(), tmp_path, [unrelated])
    assert _deps(defs.resolve_asset_graph(), DAG_KEY) == set()
    assert airflow.task_requests() == []


def test_one_asset_built_by_tasks_of_two_dags(tmp_path: Path) -> None:
    airflow = Airflow("v2", {"daily": {"publish": []}, "weekly": {"publish": [], "other": []}})
    mapped = assets_with_multiple_task_mappings(
        assets=[dg.AssetSpec("report")],
        task_handles=[{"dag_id": "daily", "task_id": "publish"}, {"dag_id": "weekly", "task_id": "publish"}],
    )
    defs = _build(airflow.instance(), tmp_path, mapped)
    graph = defs.resolve_asset_graph()
    for dag_id in ("daily", "weekly"):
        assert _deps(graph, dg.AssetKey(["test_airflow", "dag", dag_id])) == {"report"}
    table = graph.get(dg.AssetKey("report")).metadata["airflow/tasks"].value
    assert f"[`publish`]({URL}/dags/daily/tasks/publish)" in table
    assert f"[`publish`]({URL}/dags/weekly/tasks/publish)" in table
    assert airflow.task_requests() == ["daily", "weekly"]


def test_loads_from_the_snapshot_while_airflow_is_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    airflow = Airflow("v2", {"rebuild": REBUILD_TASKS, "other": {"x": []}})
    up = _build(airflow.instance(), tmp_path, _tutorial_mappings())
    stored = json.loads(snapshot_path(tmp_path, "test_airflow").read_text())
    assert sorted(stored["tasks"]) == ["rebuild"]
    assert [t["task_id"] for t in stored["tasks"]["rebuild"]] == ["load", "build", "export"]

    down = _build(_down(), tmp_path, _tutorial_mappings())
    before, after = up.resolve_asset_graph(), down.resolve_asset_graph()
    assert _deps(after, DAG_KEY) == _deps(before, DAG_KEY) == {"customers_csv", "raw/orders"}
    assert after.get(dg.AssetKey("customers")).metadata == before.get(dg.AssetKey("customers")).metadata
    # The stored task lists still check the mappings.
    with pytest.raises(AirflowConfigError, match="Task 'exprot'"):
        _build(_down(), tmp_path, _tutorial_mappings(export="exprot"))
    # A DAG mapped only since the snapshot was taken cannot be checked: a warning, and the location loads.
    newly = assets_with_task_mappings(dag_id="other", task_mappings={"x": [dg.AssetSpec("new_table")]})
    with caplog.at_level(logging.WARNING):
        later = _build(_down(), tmp_path, [*_tutorial_mappings(), *newly])
    assert "cannot check the task mappings of DAG(s) other" in caplog.text
    assert _deps(later.resolve_asset_graph(), dg.AssetKey(["test_airflow", "dag", "other"])) == {"new_table"}


def test_two_instances_sharing_a_dag_id_never_collide(tmp_path: Path) -> None:
    warehouse = Airflow("v2", {"shared": {"t": []}})
    lake = Airflow("v1", {"shared": {"t": []}})
    a = assets_with_task_mappings(dag_id="shared", task_mappings={"t": [dg.AssetSpec("warehouse_table")]})
    b = assets_with_task_mappings(dag_id="shared", task_mappings={"t": [dg.AssetSpec("lake_table")]})
    defs = dg.Definitions.merge(
        _build(warehouse.instance("warehouse"), tmp_path, a),
        _build(lake.instance("lake"), tmp_path, b),
    )
    graph = defs.resolve_asset_graph()
    assert _deps(graph, dg.AssetKey(["warehouse", "dag", "shared"])) == {"warehouse_table"}
    assert _deps(graph, dg.AssetKey(["lake", "dag", "shared"])) == {"lake_table"}
    assert (
        graph.get(dg.AssetKey("lake_table")).metadata["airflow/task_url"].value
        == f"{URL}/dags/shared/grid?task_id=t"
    )
    assert (
        graph.get(dg.AssetKey("warehouse_table")).metadata["airflow/task_url"].value
        == f"{URL}/dags/shared/tasks/t"
    )


# -- the index the sensor reads, and the checks that need no Airflow --------------------------------------


def _snapshot(tasks: dict[str, tuple[Task, ...]], dags: Sequence[str] = ("rebuild",)) -> AirflowSnapshot:
    return AirflowSnapshot(
        instance_name="inst",
        webserver_url=URL,
        api_version="v2",
        fetched_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
        dags=tuple(Dag(dag_id=d) for d in dags),
        tasks=tasks,
    )


def _observe(assets: Sequence[Any], dags: Sequence[str] = ("rebuild",), name: str = "inst") -> Any:
    tasks = {
        d: tuple(Task(dag_id=d, task_id=t, is_mapped=(t == "build")) for t in REBUILD_TASKS) for d in dags
    }
    keys = {d: dg.AssetKey([name, "dag", d]) for d in dags}
    return observe_definitions(
        instance_name=name,
        snapshot=_snapshot(tasks, dags),
        dag_specs=[dg.AssetSpec(k) for k in keys.values()],
        dag_keys=keys,
        defs=dg.Definitions(assets=list(assets)),
    )


def test_the_index_answers_the_sensors_questions() -> None:
    mapped = [
        *_tutorial_mappings(),
        *assets_with_dag_mappings(dag_mappings={"rebuild": [dg.AssetSpec("summary")]}),
    ]
    index = _observe(mapped).mappings
    assert index.task_asset_keys("rebuild", "build") == (
        dg.AssetKey("customers"),
        dg.AssetKey("stg_customers"),
    )
    assert index.task_asset_keys("rebuild", "load") == (
        dg.AssetKey(["raw", "customers"]),
        dg.AssetKey(["raw", "orders"]),
    )
    assert index.task_asset_keys("rebuild", "nope") == ()
    assert index.dag_asset_keys("rebuild") == (dg.AssetKey("summary"),)
    assert index.dag_asset_keys("other") == ()
    assert len(index.asset_keys_of_dag("rebuild")) == 6 and index.asset_keys_of_dag("other") == ()
    assert index.mapped_task_ids("rebuild") == frozenset({"load", "build", "export"})
    assert index.task_mapped_dag_ids == frozenset({"rebuild"})
    task = index.task("rebuild", "build")
    assert task is not None and task.is_mapped
    assert dg.AssetKey("summary") in index.asset_keys and len(index.asset_keys) == 6
    assert index and not _observe([dg.AssetSpec("plain")]).mappings


def test_assets_taken_by_another_instance_are_left_alone() -> None:
    first = _observe(_tutorial_mappings(), name="first")
    assert first.defs is not None
    second = _observe(list(first.defs.assets or []), name="second")
    assert not second.mappings
    assert all(not spec.deps for spec in second.dag_specs)


def test_mapping_a_dags_own_asset_or_a_cycle_through_it_is_an_error() -> None:
    own = assets_with_task_mappings(
        dag_id="rebuild", task_mappings={"load": [dg.AssetSpec(["inst", "dag", "rebuild"])]}
    )
    with pytest.raises(AirflowConfigError, match="is the asset of DAG 'rebuild'"):
        _observe(own)
    cycle = assets_with_task_mappings(
        dag_id="rebuild", task_mappings={"load": [dg.AssetSpec("x", deps=[["inst", "dag", "rebuild"]])]}
    )
    with pytest.raises(AirflowConfigError, match="also depend on that DAG's asset"):
        _observe(cycle)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_task_lists_parse_both_versions_and_skip_a_vanished_dag(version: str) -> None:
    airflow = Airflow(
        version,
        {"rebuild": REBUILD_TASKS},
        build={
            "is_mapped": True,
            "retries": 3,
            "operator_name": "_PythonDecoratedOperator",
            "task_display_name": "Build!",
        },
    )
    lists = fetch_task_lists(airflow.instance(), ["rebuild", "gone"])
    assert list(lists) == ["rebuild"]
    load, build, export = lists["rebuild"]
    assert (load.task_id, load.downstream_task_ids, load.is_mapped, load.retries) == (
        "load",
        ("build",),
        False,
        0,
    )
    assert (build.is_mapped, build.retries, build.operator, build.display_name) == (
        True,
        3,
        "_PythonDecoratedOperator",
        "Build!",
    )
    assert (export.owner, export.trigger_rule) == ("data-eng", "all_success")


def test_a_snapshot_stored_before_observe_still_loads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    airflow = Airflow("v1", {"rebuild": REBUILD_TASKS})
    _build(airflow.instance(), tmp_path, [])
    path = snapshot_path(tmp_path, "test_airflow")
    raw = json.loads(path.read_text())
    assert raw["tasks"] == {}
    del raw["tasks"]  # as written by airpeer before observe
    path.write_text(json.dumps(raw))
    with caplog.at_level(logging.WARNING):
        defs = _build(_down(), tmp_path, _tutorial_mappings())
    assert "cannot check the task mappings of DAG(s) rebuild" in caplog.text
    meta = defs.resolve_asset_graph().get(dg.AssetKey("customers")).metadata
    assert meta["airflow/task_url"].value == f"{URL}/dags/rebuild/grid?task_id=build"
    assert "airflow/operator" not in meta


def test_the_rest_of_the_users_definitions_is_kept(tmp_path: Path) -> None:
    airflow = Airflow("v2", {"rebuild": REBUILD_TASKS})

    @dg.asset
    def own() -> None: ...

    @dg.asset_check(asset=own)
    def own_is_fine() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True)

    job = dg.define_asset_job("own_job", selection=[own])
    user = dg.Definitions(
        assets=[own, *_tutorial_mappings()],
        asset_checks=[own_is_fine],
        jobs=[job],
        schedules=[dg.ScheduleDefinition(name="own_daily", job=job, cron_schedule="0 0 * * *")],
        resources={"setting": dg.ResourceDefinition.hardcoded_resource(1)},
    )
    defs = build_defs_from_airflow_instance(
        airflow_instance=airflow.instance(), snapshot_dir=tmp_path, defs=user
    )
    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_job_def("own_job") is not None
    assert defs.get_schedule_def("own_daily") is not None
    assert "setting" in (defs.resources or {})
    graph = defs.resolve_asset_graph()
    assert dg.AssetCheckKey(dg.AssetKey("own"), "own_is_fine") in graph.asset_check_keys
    assert INSTANCE_KEY not in graph.get(dg.AssetKey("own")).metadata
