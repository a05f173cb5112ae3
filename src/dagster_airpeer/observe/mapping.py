"""The user's side of observe: mark assets as built by Airflow tasks or DAGs.

The three functions have the names and arguments of dagster-airlift's observe API, so tutorial code ports by
changing its import line. They only record the mapping in each spec's metadata; which Airflow instance the
mapping belongs to is decided later, by the `build_defs_from_airflow_instance` call that receives the assets
(see `observe.build`), so two instances that share a DAG id never collide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypedDict

import dagster as dg

#: Metadata key: the (dag_id, task_id) pairs whose success materializes the asset.
TASK_MAPPINGS_KEY = "airpeer/task_mappings"
#: Metadata key: the DAG ids whose successful run materializes the asset.
DAG_MAPPINGS_KEY = "airpeer/dag_mappings"

MappedAsset = dg.AssetSpec | dg.AssetsDefinition


class TaskHandleDict(TypedDict):
    """One Airflow task: ``{"dag_id": ..., "task_id": ...}``."""

    dag_id: str
    task_id: str


def _raw(value: Any) -> Any:
    # Specs inside an AssetsDefinition hold normalised metadata (JsonMetadataValue); plain specs hold the raw
    # value they were given.
    return value.value if isinstance(value, dg.JsonMetadataValue) else value


def task_handles_of(spec: dg.AssetSpec) -> tuple[tuple[str, str], ...]:
    """The (dag_id, task_id) pairs an asset is mapped to, in the order they were added."""
    raw = _raw(spec.metadata.get(TASK_MAPPINGS_KEY)) or []
    return tuple((str(h["dag_id"]), str(h["task_id"])) for h in raw)


def dag_ids_of(spec: dg.AssetSpec) -> tuple[str, ...]:
    """The DAG ids an asset is mapped to as a whole."""
    raw = _raw(spec.metadata.get(DAG_MAPPINGS_KEY)) or []
    return tuple(str(d) for d in raw)


def is_mapped(spec: dg.AssetSpec) -> bool:
    return bool(task_handles_of(spec) or dag_ids_of(spec))


def _check_id(value: object, what: str, function: str) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"{function}: {what} must be a non-empty string, got {value!r}")
    return value


def _map_items(
    items: Iterable[MappedAsset], function: str, add: Callable[[dg.AssetSpec], dg.AssetSpec]
) -> list[MappedAsset]:
    if isinstance(items, (dg.AssetSpec, dg.AssetsDefinition, str)):
        raise TypeError(
            f"{function}: expected a list of AssetSpec or AssetsDefinition, got one {type(items).__name__}"
        )
    mapped: list[MappedAsset] = []
    for item in items:
        if isinstance(item, dg.AssetSpec):
            mapped.append(add(item))
        elif isinstance(item, dg.AssetsDefinition):
            mapped.append(item.map_asset_specs(add))
        else:
            raise TypeError(
                f"{function}: each mapped item must be a dagster AssetSpec or AssetsDefinition (an @asset, a "
                f"@multi_asset, @dbt_assets), got {type(item).__name__}"
            )
    return mapped


def _adding_tasks(handles: Sequence[tuple[str, str]]) -> Callable[[dg.AssetSpec], dg.AssetSpec]:
    def add(spec: dg.AssetSpec) -> dg.AssetSpec:
        merged = list(task_handles_of(spec))
        merged += [h for h in handles if h not in merged]
        value = [{"dag_id": d, "task_id": t} for d, t in merged]
        return spec.merge_attributes(metadata={TASK_MAPPINGS_KEY: value})

    return add


def assets_with_task_mappings(
    dag_id: str, task_mappings: Mapping[str, Iterable[MappedAsset]]
) -> Sequence[MappedAsset]:
    """Map the assets each task of one DAG builds: ``task_mappings={task_id: [AssetSpec | AssetsDefinition]}``.

    Pass the result to ``build_defs_from_airflow_instance(defs=dg.Definitions(assets=...))``: each asset then
    carries its task's metadata (task id, operator, a link to the task in Airflow), the DAG's asset depends on
    the DAG's leaf mapped assets, and the DAG id and task ids are checked against Airflow when the code
    location loads.
    """
    function = "assets_with_task_mappings"
    _check_id(dag_id, "dag_id", function)
    if not isinstance(task_mappings, Mapping):
        raise TypeError(
            f"{function}: task_mappings must be a dict {{task_id: [assets]}}, got {type(task_mappings).__name__}"
        )
    result: list[MappedAsset] = []
    for task_id, items in task_mappings.items():
        _check_id(task_id, "each task_mappings key (a task id)", function)
        result += _map_items(items, function, _adding_tasks([(dag_id, task_id)]))
    return result


def assets_with_dag_mappings(dag_mappings: Mapping[str, Iterable[MappedAsset]]) -> Sequence[MappedAsset]:
    """Map assets to whole DAGs: ``dag_mappings={dag_id: [AssetSpec | AssetsDefinition]}``.

    A DAG-mapped asset is materialized when a run of its DAG succeeds, like the DAG's own asset.
    """
    function = "assets_with_dag_mappings"
    if not isinstance(dag_mappings, Mapping):
        raise TypeError(
            f"{function}: dag_mappings must be a dict {{dag_id: [assets]}}, got {type(dag_mappings).__name__}"
        )
    result: list[MappedAsset] = []
    for dag_id, items in dag_mappings.items():
        _check_id(dag_id, "each dag_mappings key (a DAG id)", function)

        def add(spec: dg.AssetSpec, dag_id: str = dag_id) -> dg.AssetSpec:
            merged = list(dag_ids_of(spec))
            if dag_id not in merged:
                merged.append(dag_id)
            return spec.merge_attributes(metadata={DAG_MAPPINGS_KEY: merged})

        result += _map_items(items, function, add)
    return result


def assets_with_multiple_task_mappings(
    assets: Sequence[MappedAsset], task_handles: list[TaskHandleDict]
) -> Sequence[MappedAsset]:
    """Map assets that several tasks build (a daily and a weekly DAG, say): each task's success materializes them.

    ``task_handles=[{"dag_id": ..., "task_id": ...}, ...]``.
    """
    function = "assets_with_multiple_task_mappings"
    if not task_handles:
        raise ValueError(f"{function}: task_handles must name at least one {{'dag_id': ..., 'task_id': ...}}")
    handles: list[tuple[str, str]] = []
    for handle in task_handles:
        if not isinstance(handle, Mapping) or set(handle) != {"dag_id", "task_id"}:
            raise TypeError(
                f"{function}: each task handle must be a dict with exactly the keys 'dag_id' and 'task_id', "
                f"got {handle!r}"
            )
        handles.append(
            (
                _check_id(handle["dag_id"], "dag_id", function),
                _check_id(handle["task_id"], "task_id", function),
            )
        )
    return _map_items(assets, function, _adding_tasks(handles))
