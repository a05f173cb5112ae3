"""The build side of observe: check the mappings against Airflow, add lineage and task metadata, index them.

Called by ``build_defs_from_airflow_instance`` with the user's ``defs``. A mapped asset belongs to the instance
whose build call receives it: the call stamps its instance name into the asset's metadata and leaves alone
any asset already stamped by another instance, so two instances sharing a DAG id never mix their assets.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg

from ..airflow.errors import AirflowConfigError
from ..airflow.models import Task
from ..airflow.ui_urls import dag_ui_url, task_ui_url
from ..snapshot import AirflowSnapshot
from .index import ObservedMappings
from .mapping import dag_ids_of, is_mapped, task_handles_of

#: Metadata key: the Airflow instance whose build call took the asset's mappings.
INSTANCE_KEY = "airpeer/airflow_instance"

_MAX_NAMES = 10


@dataclass(frozen=True)
class ObservedDefinitions:
    """What the observe step hands back to ``build_defs_from_airflow_instance``."""

    #: The DAG assets' specs, each depending on its DAG's leaf mapped assets.
    dag_specs: list[dg.AssetSpec]
    #: The user's definitions with each mapped asset carrying its task's metadata (None if none were given).
    defs: dg.Definitions | None
    #: The sensor's index of mapped assets.
    mappings: ObservedMappings


def _specs_of(item: object) -> Sequence[dg.AssetSpec]:
    if isinstance(item, dg.AssetSpec):
        return [item]
    if isinstance(item, dg.AssetsDefinition):
        return list(item.specs)
    # SourceAsset, CacheableAssetsDefinition: not mappable (the mapping functions refuse them).
    return []


def _ours(spec: dg.AssetSpec, instance_name: str) -> bool:
    if not is_mapped(spec):
        return False
    owner = spec.metadata.get(INSTANCE_KEY)
    owner = owner.value if isinstance(owner, dg.TextMetadataValue) else owner
    return owner is None or owner == instance_name


def _mapped_specs(defs: dg.Definitions | None, instance_name: str) -> Iterator[dg.AssetSpec]:
    for item in (defs.assets or []) if defs is not None else []:
        for spec in _specs_of(item):
            if _ours(spec, instance_name):
                yield spec


def has_mappings(defs: dg.Definitions | None, instance_name: str) -> bool:
    """Whether `defs` maps any asset to a task or DAG of this instance (the observe stage is in use)."""
    return next(_mapped_specs(defs, instance_name), None) is not None


def task_mapped_dag_ids(defs: dg.Definitions | None, instance_name: str) -> set[str]:
    """The DAGs whose task lists the snapshot needs: those with a task mapping for this instance."""
    return {dag_id for spec in _mapped_specs(defs, instance_name) for dag_id, _ in task_handles_of(spec)}


def _names(keys: Iterable[dg.AssetKey]) -> str:
    names = sorted(k.to_user_string() for k in keys)
    more = f" and {len(names) - _MAX_NAMES} more" if len(names) > _MAX_NAMES else ""
    return ", ".join(repr(n) for n in names[:_MAX_NAMES]) + more


def _closest(name: str, candidates: Iterable[str], what: str) -> str:
    pool = sorted(set(candidates))
    close = difflib.get_close_matches(name, pool, n=3, cutoff=0.6)
    if close:
        return f"Closest {what}: {', '.join(repr(c) for c in close)}."
    if not pool:
        return f"There are no {what}."
    more = f" (and {len(pool) - _MAX_NAMES} more)" if len(pool) > _MAX_NAMES else ""
    return f"None is close; the {what} are: {', '.join(repr(c) for c in pool[:_MAX_NAMES])}{more}."


def _check(
    instance_name: str,
    snapshot: AirflowSnapshot,
    selected_dag_ids: set[str],
    by_task: Mapping[tuple[str, str], set[dg.AssetKey]],
    by_dag: Mapping[str, set[dg.AssetKey]],
) -> None:
    listed = {dag.dag_id for dag in snapshot.dags}
    keys_of_dag: dict[str, set[dg.AssetKey]] = {d: set(keys) for d, keys in by_dag.items()}
    for (dag_id, _), keys in by_task.items():
        keys_of_dag.setdefault(dag_id, set()).update(keys)
    problems: list[str] = []
    unchecked: list[str] = []
    for dag_id in sorted(keys_of_dag):
        keys = keys_of_dag[dag_id]
        if dag_id not in listed:
            problems.append(
                f"DAG {dag_id!r} (mapped to {_names(keys)}) is not in the Airflow instance. "
                + _closest(dag_id, listed, "DAG ids")
            )
        elif dag_id not in selected_dag_ids:
            problems.append(
                f"DAG {dag_id!r} (mapped to {_names(keys)}) is left out by dag_selector_fn; select it or "
                "drop its mappings."
            )
    for (dag_id, task_id), keys in sorted(by_task.items()):
        if dag_id not in listed or dag_id not in selected_dag_ids:
            continue
        tasks = snapshot.tasks.get(dag_id)
        if tasks is None:
            unchecked.append(dag_id)
            continue
        task_ids = {t.task_id for t in tasks}
        if task_id not in task_ids:
            problems.append(
                f"Task {task_id!r} (mapped to {_names(keys)}) is not in DAG {dag_id!r}. "
                + _closest(task_id, task_ids, f"task ids of DAG {dag_id!r}")
            )
    if problems:
        raise AirflowConfigError(
            f"airpeer: {len(problems)} asset mapping(s) do not match Airflow instance '{instance_name}' "
            f"({snapshot.webserver_url}):\n" + "\n".join(f"- {p}" for p in problems)
        )
    if unchecked:
        dg.get_dagster_logger().warning(
            f"airpeer: cannot check the task mappings of DAG(s) {', '.join(sorted(set(unchecked)))} of Airflow "
            f"instance '{instance_name}': the snapshot in use (taken at "
            f"{snapshot.fetched_at.isoformat(timespec='seconds')}) has no task list for them: it was taken "
            "before they were mapped and Airflow is unreachable now, or the DAGs vanished from Airflow while the "
            "code location loaded. Reload the code location once Airflow is back to check them."
        )


def _task_metadata(
    snapshot: AirflowSnapshot, handles: Sequence[tuple[str, str]], task_of: Mapping[tuple[str, str], Task]
) -> dict[str, Any]:
    def url(dag_id: str, task_id: str) -> str:
        return task_ui_url(snapshot.webserver_url, snapshot.api_version, dag_id, task_id)

    if len(handles) == 1:
        dag_id, task_id = handles[0]
        metadata: dict[str, Any] = {
            "airflow/dag_id": dag_id,
            "airflow/task_id": task_id,
            "airflow/task_url": dg.MetadataValue.url(url(dag_id, task_id)),
        }
        task = task_of.get((dag_id, task_id))
        if task is not None:
            if task.operator:
                metadata["airflow/operator"] = task.operator
            metadata["airflow/task_is_mapped"] = task.is_mapped
            if task.retries is not None:
                metadata["airflow/task_retries"] = task.retries
        return metadata
    rows = ["| DAG | task | operator |", "|---|---|---|"]
    for dag_id, task_id in handles:
        task = task_of.get((dag_id, task_id))
        operator = task.operator if task is not None and task.operator else ""
        rows.append(f"| `{dag_id}` | [`{task_id}`]({url(dag_id, task_id)}) | {operator} |")
    return {"airflow/tasks": dg.MetadataValue.md("\n".join(rows))}


def _dag_metadata(snapshot: AirflowSnapshot, dag_ids: Sequence[str]) -> dict[str, Any]:
    if len(dag_ids) == 1:
        return {
            "airflow/dag_id": dag_ids[0],
            "airflow/dag_url": dg.MetadataValue.url(
                dag_ui_url(snapshot.webserver_url, snapshot.api_version, dag_ids[0])
            ),
        }
    lines = [f"- [`{d}`]({dag_ui_url(snapshot.webserver_url, snapshot.api_version, d)})" for d in dag_ids]
    return {"airflow/dags": dg.MetadataValue.md("\n".join(lines))}


def _with_assets(defs: dg.Definitions, assets: list[Any]) -> dg.Definitions:
    # Definitions offers no public way to replace only its assets (map_asset_specs is a preview API that warns on
    # every load): rebuild it from its public attributes, all of which the constructor takes.
    return dg.Definitions(
        assets=assets,
        schedules=defs.schedules,
        sensors=defs.sensors,
        jobs=defs.jobs,
        resources=defs.resources,
        executor=defs.executor,
        loggers=defs.loggers,
        asset_checks=defs.asset_checks,
        metadata=defs.metadata,
        component_tree=defs.component_tree,
    )


def _sorted(keys: Iterable[dg.AssetKey]) -> tuple[dg.AssetKey, ...]:
    return tuple(sorted(set(keys), key=lambda k: k.to_user_string()))


def observe_definitions(
    *,
    instance_name: str,
    snapshot: AirflowSnapshot,
    dag_specs: Sequence[dg.AssetSpec],
    dag_keys: Mapping[str, dg.AssetKey],
    defs: dg.Definitions | None,
) -> ObservedDefinitions:
    """Check the user's mappings against the snapshot, then add lineage and task metadata, and index them.

    Args:
        instance_name: the Airflow instance of this build call; only its mappings are taken.
        snapshot: what Airflow reported at load (or the stored snapshot while Airflow is down).
        dag_specs: the DAG assets' specs (selected DAGs only).
        dag_keys: DAG id -> the key of its asset (selected DAGs only).
        defs: the user's definitions, as passed to ``build_defs_from_airflow_instance``.

    Raises:
        AirflowConfigError: a mapping names a DAG or task that Airflow does not have (with the closest names),
            a DAG left out by ``dag_selector_fn``, or a DAG's own asset.
    """
    specs = list(_mapped_specs(defs, instance_name))
    if not specs:
        return ObservedDefinitions(list(dag_specs), defs, ObservedMappings(instance_name))
    by_task: dict[tuple[str, str], set[dg.AssetKey]] = {}
    by_dag: dict[str, set[dg.AssetKey]] = {}
    deps_of: dict[dg.AssetKey, set[dg.AssetKey]] = {}
    dag_assets = {key: dag_id for dag_id, key in dag_keys.items()}
    for spec in specs:
        if spec.key in dag_assets:
            raise AirflowConfigError(
                f"airpeer: asset {spec.key.to_user_string()!r} is the asset of DAG {dag_assets[spec.key]!r} of "
                f"Airflow instance '{instance_name}' and cannot be mapped to a task or DAG; map your own asset."
            )
        deps_of[spec.key] = {dep.asset_key for dep in spec.deps}
        for handle in task_handles_of(spec):
            by_task.setdefault(handle, set()).add(spec.key)
        for dag_id in dag_ids_of(spec):
            by_dag.setdefault(dag_id, set()).add(spec.key)
    _check(instance_name, snapshot, set(dag_keys), by_task, by_dag)

    task_of = {
        (dag_id, task.task_id): task
        for dag_id, tasks in snapshot.tasks.items()
        for task in tasks
        if (dag_id, task.task_id) in by_task
    }

    def enrich(spec: dg.AssetSpec) -> dg.AssetSpec:
        if not _ours(spec, instance_name):
            return spec
        metadata: dict[str, Any] = {INSTANCE_KEY: instance_name}
        dag_ids = dag_ids_of(spec)
        if dag_ids:
            metadata.update(_dag_metadata(snapshot, dag_ids))
        handles = task_handles_of(spec)
        if handles:
            metadata.update(_task_metadata(snapshot, handles, task_of))
        return spec.merge_attributes(metadata=metadata)

    assert defs is not None  # there are mapped specs
    assets: list[Any] = []
    for item in defs.assets or []:
        if isinstance(item, dg.AssetSpec):
            assets.append(enrich(item))
        elif isinstance(item, dg.AssetsDefinition) and any(_ours(s, instance_name) for s in item.specs):
            assets.append(item.map_asset_specs(enrich))
        else:
            assets.append(item)

    # The DAG's asset depends on the DAG's leaf mapped assets: those no other mapped asset of the DAG depends on.
    mapped_of_dag: dict[str, set[dg.AssetKey]] = {d: set(keys) for d, keys in by_dag.items()}
    for (dag_id, _), keys in by_task.items():
        mapped_of_dag.setdefault(dag_id, set()).update(keys)
    new_dag_specs: list[dg.AssetSpec] = []
    key_dag = {key: dag_id for dag_id, key in dag_keys.items()}
    for spec in dag_specs:
        mapped = mapped_of_dag.get(key_dag.get(spec.key, ""), set())
        if not mapped:
            new_dag_specs.append(spec)
            continue
        on_dag = sorted(k.to_user_string() for k in mapped if spec.key in deps_of[k])
        if on_dag:
            raise AirflowConfigError(
                f"airpeer: asset(s) {', '.join(repr(n) for n in on_dag)} are mapped to DAG "
                f"{key_dag[spec.key]!r} of Airflow instance '{instance_name}' and also depend on that DAG's "
                f"asset {spec.key.to_user_string()!r}, which depends on them in turn; drop that dependency."
            )
        upstream_of_others = {dep for key in mapped for dep in deps_of[key] if dep in mapped}
        leaves = _sorted(mapped - upstream_of_others)
        new_dag_specs.append(spec.merge_attributes(deps=list(leaves)))

    task_ids_by_dag: dict[str, set[str]] = {}
    for dag_id, task_id in by_task:
        task_ids_by_dag.setdefault(dag_id, set()).add(task_id)
    mappings = ObservedMappings(
        instance_name=instance_name,
        keys_by_task={handle: _sorted(keys) for handle, keys in by_task.items()},
        keys_by_dag={dag_id: _sorted(keys) for dag_id, keys in by_dag.items()},
        task_ids_by_dag={dag_id: frozenset(ids) for dag_id, ids in task_ids_by_dag.items()},
        tasks=task_of,
        keys_of_dag={dag_id: _sorted(keys) for dag_id, keys in mapped_of_dag.items()},
    )
    return ObservedDefinitions(new_dag_specs, _with_assets(defs, assets), mappings)
