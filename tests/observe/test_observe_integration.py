"""Observe at load against a real Airflow 2.11 and 3.3: lineage, task metadata and links, unknown-task errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from dagster_airpeer import (
    AirflowBasicAuthBackend,
    AirflowConfigError,
    AirflowInstance,
    assets_with_task_mappings,
    build_defs_from_airflow_instance,
)
from dagster_airpeer.snapshot import read_snapshot, snapshot_path

pytestmark = pytest.mark.integration

DAG_ID = "airpeer_observe"


def _instance(stack: Any) -> AirflowInstance:
    return AirflowInstance(
        auth_backend=AirflowBasicAuthBackend(stack.url, stack.username, stack.password), name="observed"
    )


@dg.multi_asset(
    specs=[dg.AssetSpec("doubled_1"), dg.AssetSpec("doubled_all", deps=["doubled_1", "extracted"])]
)
def transformed():  # type: ignore[no-untyped-def]  # a multi-output op must not be annotated None
    """Stands for a multi-asset (a dbt project, say) built by the mapped task."""


def _mappings(load_task: str = "load") -> Any:
    return assets_with_task_mappings(
        dag_id=DAG_ID,
        task_mappings={
            "extract": [dg.AssetSpec("extracted")],
            "transform": [transformed],
            load_task: [dg.AssetSpec("loaded", deps=["doubled_all"])],
        },
    )


def test_task_mappings_against_real_airflow(airflow: Any, tmp_path: Path) -> None:
    airflow.wait_for_dags([DAG_ID])
    instance = _instance(airflow)
    defs = build_defs_from_airflow_instance(
        airflow_instance=instance,
        defs=dg.Definitions(assets=_mappings()),
        snapshot_dir=tmp_path,
        dag_selector_fn=lambda dag: "airpeer" in dag.tags,
    )
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    dag_key = dg.AssetKey(["observed", "dag", DAG_ID])
    assert graph.get(dag_key).parent_keys == {dg.AssetKey("loaded")}
    assert graph.get(dg.AssetKey("doubled_all")).parent_keys == {
        dg.AssetKey("doubled_1"),
        dg.AssetKey("extracted"),
    }

    def meta(key: str) -> dict[str, Any]:
        return {k: getattr(v, "value", v) for k, v in graph.get(dg.AssetKey(key)).metadata.items()}

    base = airflow.url.rstrip("/")
    extract, doubled = meta("extracted"), meta("doubled_all")
    assert (extract["airflow/task_id"], extract["airflow/operator"]) == ("extract", "PythonOperator")
    assert extract["airflow/task_is_mapped"] is False
    assert (doubled["airflow/task_id"], doubled["airflow/task_is_mapped"]) == ("transform", True)
    if instance.api_version == "v1":
        assert extract["airflow/task_url"] == f"{base}/dags/{DAG_ID}/grid?task_id=extract"
    else:
        assert extract["airflow/task_url"] == f"{base}/dags/{DAG_ID}/tasks/extract"
    stored = read_snapshot(snapshot_path(tmp_path, "observed"))
    assert stored is not None and list(stored.tasks) == [DAG_ID]
    assert {t.task_id for t in stored.tasks[DAG_ID]} == {"extract", "transform", "load"}


def test_unknown_task_is_named_with_the_closest(airflow: Any, tmp_path: Path) -> None:
    airflow.wait_for_dags([DAG_ID])
    with pytest.raises(AirflowConfigError) as excinfo:
        build_defs_from_airflow_instance(
            airflow_instance=_instance(airflow),
            defs=dg.Definitions(assets=_mappings(load_task="lod")),
            snapshot_dir=tmp_path,
        )
    message = str(excinfo.value)
    assert f"Task 'lod' (mapped to 'loaded') is not in DAG '{DAG_ID}'" in message
    assert f"Closest task ids of DAG '{DAG_ID}': 'load'" in message
    assert airflow.password not in message
