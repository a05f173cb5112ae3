"""Airflow datasets (2.x) / assets (3.x) as Dagster assets, materialized from Airflow's own asset events.

Key scheme (docs/airflow-assets.md): ``[instance_name, "asset", encode(uri)]`` when the asset's name equals
its URI (every Airflow 2 dataset, and Airflow 3 assets declared by URI or by name alone), else
``[instance_name, "asset", encode(name), encode(uri)]``. `encode` keeps ASCII letters and digits and writes
every other character as an escape starting with ``_``, so each key part matches ``^[A-Za-z0-9_]+$`` (what
Dagster accepts everywhere: op and input names, the UI's key search) and `decode` gives the text back:
lossless, hence no two Airflow assets share a key. The instance name comes first, as in DAG keys
(``[instance, "dag", dag_id]``), because two Airflow instances may both have an asset ``s3://x`` that is
not the same thing; map them together in your own definitions if they are.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import dagster as dg

from ..airflow.assets import AirflowAsset, AirflowAssetEvent, get_asset_events_page, list_airflow_assets
from ..airflow.instance import AirflowInstance
from ..events import COMPLETION_METADATA_KEY
from ..feed.asset_events import AssetEventFeed, AssetFeedState, asset_event_digest

__all__ = [
    "ASSET_KEY_SEGMENT",
    "AssetEventsTick",
    "airflow_asset_key",
    "airflow_asset_specs",
    "asset_event_completion_id",
    "decode_key_part",
    "encode_key_part",
    "materialization_for_asset_event",
    "poll_airflow_asset_events",
]

#: The key component after the instance name that marks an Airflow asset (DAGs have "dag").
ASSET_KEY_SEGMENT = "asset"

# Short escapes for the characters URIs are made of; anything else is `_x` + 6 hex digits of its code point.
_ESCAPES = {
    "_": "__",
    "/": "_s",
    ".": "_d",
    ":": "_c",
    "-": "_h",
    " ": "_w",
    "@": "_a",
    "?": "_q",
    "=": "_e",
    "&": "_n",
    "%": "_p",
    "+": "_l",
    "#": "_f",
    ",": "_m",
    "~": "_t",
}
_UNESCAPES = {v[1]: k for k, v in _ESCAPES.items()}
#: The whole encoding of the empty string ("_z" never appears inside another encoding's escapes).
_EMPTY = "_z"


def encode_key_part(text: str) -> str:
    """`text` as one Dagster key part of ``[A-Za-z0-9_]`` only; `decode_key_part` inverts it."""
    if text == "":
        return _EMPTY
    out: list[str] = []
    for ch in text:
        if ("a" <= ch <= "z") or ("A" <= ch <= "Z") or ("0" <= ch <= "9"):
            out.append(ch)
        elif ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        else:
            out.append(f"_x{ord(ch):06x}")
    return "".join(out)


def decode_key_part(part: str) -> str:
    """The text `encode_key_part` made `part` from; ValueError if `part` is not such an encoding."""
    if part == _EMPTY:
        return ""
    out: list[str] = []
    i = 0
    while i < len(part):
        ch = part[i]
        if ch != "_":
            if not ch.isascii() or not ch.isalnum():
                raise ValueError(f"not an encoded key part: {part!r}")
            out.append(ch)
            i += 1
            continue
        code = part[i + 1 : i + 2]
        if code in _UNESCAPES:
            out.append(_UNESCAPES[code])
            i += 2
        elif code == "x" and len(part) >= i + 8:
            digits = part[i + 2 : i + 8]
            if not all(c in "0123456789abcdef" for c in digits):
                raise ValueError(f"not an encoded key part: {part!r}")
            out.append(chr(int(digits, 16)))
            i += 8
        else:
            raise ValueError(f"not an encoded key part: {part!r}")
    text = "".join(out)
    if encode_key_part(text) != part:
        raise ValueError(f"not the canonical encoding: {part!r}")
    return text


def airflow_asset_key(instance_name: str, *, uri: str, name: str | None = None) -> dg.AssetKey:
    """The Dagster key of an Airflow asset (Airflow 2: its URI; Airflow 3: its name and URI)."""
    if name is None or name == uri:
        return dg.AssetKey([instance_name, ASSET_KEY_SEGMENT, encode_key_part(uri)])
    return dg.AssetKey([instance_name, ASSET_KEY_SEGMENT, encode_key_part(name), encode_key_part(uri)])


def key_of_asset(instance_name: str, asset: AirflowAsset) -> dg.AssetKey:
    return airflow_asset_key(instance_name, uri=asset.uri, name=asset.name)


def airflow_asset_specs(
    instance_name: str,
    assets: Sequence[AirflowAsset],
    *,
    dag_specs: Mapping[str, dg.AssetSpec] | None = None,
    task_assets: Mapping[tuple[str, str], Sequence[dg.AssetKey]] | None = None,
) -> tuple[list[dg.AssetSpec], dict[str, dg.AssetSpec]]:
    """The specs of Airflow's assets, and the DAG specs updated to depend on the assets they consume.

    Args:
        instance_name: the `AirflowInstance.name`.
        assets: from `list_airflow_assets`.
        dag_specs: dag_id -> the spec of the DAG's asset (the peered DAG assets).
        task_assets: (dag_id, task_id) -> keys of Dagster assets mapped to that task (observe's mappings).

    An Airflow asset depends on what produces it: the assets mapped to each producing task when it has any,
    else the producing DAG's asset (when that DAG is peered). The DAG asset of each DAG scheduled on it
    depends on it. Returns (asset specs, {dag_id: updated DAG spec} for the DAGs whose deps changed).
    """
    dag_specs = dict(dag_specs or {})
    task_assets = dict(task_assets or {})
    specs: list[dg.AssetSpec] = []
    consumers: dict[str, list[dg.AssetKey]] = {}
    for asset in assets:
        key = key_of_asset(instance_name, asset)
        deps: list[dg.AssetKey] = []
        for dag_id, task_id in asset.producing_tasks:
            mapped = task_assets.get((dag_id, task_id))
            if mapped:
                deps.extend(mapped)
            elif dag_id in dag_specs:
                deps.append(dag_specs[dag_id].key)
        metadata: dict[str, Any] = {
            "airflow/asset_uri": asset.uri,
            "airflow/asset_name": asset.name,
            "airflow/asset_id": asset.id,
            "airflow/instance": instance_name,
        }
        if asset.group:
            metadata["airflow/asset_group"] = asset.group
        if asset.producing_tasks:
            metadata["airflow/producing_tasks"] = dg.MetadataValue.json(
                [{"dag_id": d, "task_id": t} for d, t in asset.producing_tasks]
            )
        if asset.consuming_dags:
            metadata["airflow/consuming_dags"] = dg.MetadataValue.json(list(asset.consuming_dags))
        specs.append(
            dg.AssetSpec(
                key=key,
                deps=list(dict.fromkeys(deps)),
                description=f"Airflow asset `{asset.uri}`"
                + (f" (name `{asset.name}`)" if asset.name != asset.uri else "")
                + f" of instance {instance_name}, materialized from Airflow's asset events.",
                metadata=metadata,
                kinds={"airflow"},
            )
        )
        for dag_id in asset.consuming_dags:
            consumers.setdefault(dag_id, []).append(key)
    updated: dict[str, dg.AssetSpec] = {}
    for dag_id, keys in consumers.items():
        spec = dag_specs.get(dag_id)
        if spec is None:
            continue
        existing = [dep.asset_key for dep in spec.deps]
        new = [k for k in keys if k not in existing]
        if new:
            updated[dag_id] = spec.replace_attributes(deps=[*spec.deps, *new])
    return specs, updated


def asset_event_completion_id(instance_name: str, event: AirflowAssetEvent) -> str:
    """The stable id of one asset event (`airpeer/completion`): the sensor skips what a crashed tick stored."""
    return f"{instance_name}:{asset_event_digest(event)}"


def materialization_for_asset_event(
    instance_name: str, event: AirflowAssetEvent, *, run_url: str | None = None
) -> dg.AssetMaterialization:
    """The materialization recording one Airflow asset event on the asset's key."""
    key = airflow_asset_key(
        instance_name, uri=event.uri or f"airflow-asset-id:{event.asset_id}", name=event.name
    )
    metadata: dict[str, Any] = {
        COMPLETION_METADATA_KEY: asset_event_completion_id(instance_name, event),
        "airflow/asset_event_id": event.id,
        "airflow/asset_event_timestamp": dg.MetadataValue.timestamp(event.timestamp),
        "airflow/from_rest_api": event.from_rest_api,
    }
    for label, value in (
        ("airflow/source_dag_id", event.source_dag_id),
        ("airflow/source_task_id", event.source_task_id),
        ("airflow/source_run_id", event.source_run_id),
        ("airflow/partition_key", event.partition_key),
    ):
        if value:
            metadata[label] = value
    if event.source_map_index is not None and event.source_map_index >= 0:
        metadata["airflow/source_map_index"] = event.source_map_index
    if event.extra:
        metadata["airflow/extra"] = dg.MetadataValue.json(dict(event.extra))
    if event.created_dag_runs:
        metadata["airflow/triggered_runs"] = dg.MetadataValue.json(
            [{"dag_id": d, "run_id": r} for d, r in event.created_dag_runs]
        )
    if run_url:
        metadata["airflow/run_url"] = dg.MetadataValue.url(run_url)
    return dg.AssetMaterialization(
        asset_key=key,
        description="Airflow asset event" + (" posted through Airflow's API" if event.from_rest_api else ""),
        metadata=metadata,
        partition=None,
    )


@dataclass(frozen=True)
class AssetEventsTick:
    """What one tick of the asset-event feed gives the sensor."""

    #: New events, oldest first, one materialization each.
    events: list[dg.AssetMaterialization]
    #: The next state (JSON-serialisable): store it under the cursor key "assets".
    state_doc: dict[str, Any]
    log_line: str
    #: The events' Airflow records, in the same order (for tests and callers that want more).
    airflow_events: tuple[AirflowAssetEvent, ...] = ()
    caught_up: bool = True


def poll_airflow_asset_events(
    instance: AirflowInstance,
    state_doc: dict[str, Any] | None,
    *,
    lookback: timedelta = timedelta(days=1),
    late_commit_window: timedelta = timedelta(minutes=5),
    time_budget: float = 8.0,
    page_size: int | None = None,
    include_run_urls: bool = True,
) -> AssetEventsTick:
    """One tick: the Airflow asset events not recorded yet, as materializations, and the next state.

    `state_doc` None (or a state this version cannot read) starts from Airflow's clock minus `lookback`.
    A failure of the tick's first request raises the AirflowError (keep the old state); a later one ends
    the tick with what was read (said in the log line).
    """
    started = time.monotonic()
    state: AssetFeedState | None = None
    note = ""
    if state_doc is not None:
        try:
            state = AssetFeedState.from_dict(state_doc)
        except ValueError as exc:
            note = f" (stored state unreadable, starting over from the lookback: {exc})"
    size = max(3, page_size if page_size is not None else instance.page_size)
    feed = AssetEventFeed(
        lambda offset, limit: get_asset_events_page(instance, offset=offset, limit=limit),
        total_order=instance.api_version == "v2",
        late_commit_window=late_commit_window,
        time_budget=time_budget,
        page_size=size,
    )
    poll = feed.poll(state, lookback=lookback)
    materializations = []
    for event in poll.events:
        url = None
        if include_run_urls and event.source_dag_id and event.source_run_id:
            url = instance.run_url(event.source_dag_id, event.source_run_id)
        materializations.append(materialization_for_asset_event(instance.name, event, run_url=url))
    elapsed = time.monotonic() - started
    line = (
        f"Airflow asset events of {instance.name!r}: {len(poll.events)} new, {poll.requests} request(s), "
        f"{elapsed:.2f} s, watermark {poll.state.watermark.isoformat()}"
        + ("" if poll.caught_up else ", not caught up")
        + (f", stopped early: {poll.interrupted}" if poll.interrupted is not None else "")
        + note
    )
    return AssetEventsTick(
        events=materializations,
        state_doc=poll.state.to_dict(),
        log_line=line,
        airflow_events=tuple(poll.events),
        caught_up=poll.caught_up,
    )


def fetch_airflow_asset_specs(
    instance: AirflowInstance,
    *,
    dag_specs: Mapping[str, dg.AssetSpec] | None = None,
    task_assets: Mapping[tuple[str, str], Sequence[dg.AssetKey]] | None = None,
) -> tuple[list[dg.AssetSpec], dict[str, dg.AssetSpec]]:
    """`airflow_asset_specs` over the instance's assets as listed now (one listing; raises AirflowError)."""
    return airflow_asset_specs(
        instance.name, list_airflow_assets(instance), dag_specs=dag_specs, task_assets=task_assets
    )


def keys_of_events(instance_name: str, events: Iterable[AirflowAssetEvent]) -> set[dg.AssetKey]:
    """The asset keys a batch of events materializes (to warn about assets the definitions lack)."""
    return {
        airflow_asset_key(instance_name, uri=e.uri or f"airflow-asset-id:{e.asset_id}", name=e.name)
        for e in events
    }
