"""Airflow datasets (2.x) and assets (3.x), and their events, through the REST API.

Airflow 2 calls them *datasets* (`GET /api/v1/datasets`, `GET|POST /api/v1/datasets/events`), Airflow 3
*assets* (`GET /api/v2/assets`, `GET|POST /api/v2/assets/events`). These functions speak whichever version the
`AirflowInstance` detected and return the same records either way.

What each version really supports (read from the installed sources, not guessed):

* Airflow 2.11, `GET /api/v1/datasets/events` (`api_connexion/endpoints/dataset_endpoint.py`): filters
  `dataset_id`, `source_dag_id`, `source_task_id`, `source_run_id`, `source_map_index` (ignored when 0);
  `order_by` one of `timestamp`, `source_*` (with `-` for descending), **no tiebreaker** (events sharing one
  timestamp come in any order, which may differ between two requests); **no timestamp filter**; offset
  paging; `total_entries` counts every event the filters match.
* Airflow 3.3, `GET /api/v2/assets/events` (`api_fastapi/core_api/routes/public/assets.py`): the same filters
  plus `timestamp_gte|gt|lte|lt`, `name_pattern`; `order_by` as above (`id` is refused) **with the primary key
  appended in the same direction**, so `-timestamp` is a total order (newest first, ties by descending id).
* `GET /api/v1/datasets` orders by `id|uri|created_at|updated_at`; `GET /api/v2/assets` also by `name`, and
  lists only active assets unless `only_active=false`.
* Posting: v1 `POST /api/v1/datasets/events` {"dataset_uri", "extra"}; v2 `POST /api/v2/assets/events`
  {"asset_id", "extra"}. Both add `"from_rest_api": true` to `extra` and answer with the event.

Identity: an Airflow 2 dataset is its URI (unique). An Airflow 3 asset row is the pair (name, uri): the table
holds that pair uniquely, while a name alone or a URI alone is unique only among *active* assets, and events
of an asset no longer active keep pointing at its row. Airflow's 2-to-3 migration makes each dataset an asset
with name = uri, so `AirflowAsset.identity` is `(uri, uri)` on Airflow 2, matching what 3 will call it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict

from . import _parse as p
from .errors import AirflowConfigError

if TYPE_CHECKING:
    from .instance import AirflowInstance

__all__ = [
    "AirflowAsset",
    "AirflowAssetEvent",
    "AssetEventsPage",
    "find_asset",
    "get_asset_events_page",
    "list_airflow_assets",
    "post_asset_event",
]


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AirflowAsset(_Record):
    """An Airflow 2 dataset or Airflow 3 asset, with the tasks that produce it and the DAGs it schedules."""

    #: Airflow's primary key of the dataset/asset row (v2 `asset_id` of `POST /assets/events`).
    id: int
    #: Airflow 3's asset name; on Airflow 2 the URI (what Airflow's 2-to-3 migration makes it).
    name: str
    uri: str
    group: str | None = None
    extra: dict[str, Any] | None = None
    #: (dag_id, task_id) of each task that lists it as an outlet, sorted.
    producing_tasks: tuple[tuple[str, str], ...] = ()
    #: DAGs scheduled on it (Airflow's "consuming DAGs"), sorted.
    consuming_dags: tuple[str, ...] = ()

    @property
    def identity(self) -> tuple[str, str]:
        """(name, uri): unique among all assets of an Airflow instance, active or not."""
        return (self.name, self.uri)


class AirflowAssetEvent(_Record):
    """One asset (dataset) event: a task outlet updated the asset, or someone posted the event to the API."""

    id: int
    asset_id: int
    #: The asset's name (Airflow 2: its URI) and URI; None when Airflow did not say (an asset deleted since).
    name: str | None
    uri: str | None
    timestamp: datetime
    extra: dict[str, Any] | None = None
    source_dag_id: str | None = None
    source_task_id: str | None = None
    source_run_id: str | None = None
    source_map_index: int | None = None
    #: (dag_id, run_id) of the DAG runs this event triggered or was consumed by, as Airflow reported them.
    created_dag_runs: tuple[tuple[str, str], ...] = ()
    #: Airflow 3 partitioned assets only.
    partition_key: str | None = None

    @property
    def from_rest_api(self) -> bool:
        """Whether the event was posted through Airflow's API (Airflow marks those in `extra`)."""
        return bool((self.extra or {}).get("from_rest_api"))


class AssetEventsPage(_Record):
    """One page of asset events, newest first."""

    events: tuple[AirflowAssetEvent, ...]
    #: How many events the listing holds when this page was read (every event: no timestamp filter is used).
    total_entries: int
    #: Airflow's clock when it answered (HTTP `Date`, 1 s resolution), or None.
    server_time: datetime | None


# -- wire models (only the fields used; others ignored) ---------------------------------------------------


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _TaskRef(_Wire):
    dag_id: str
    task_id: str


class _DagRef(_Wire):
    dag_id: str


class _DatasetV1(_Wire):
    id: int
    uri: str
    extra: dict[str, Any] | None = None
    producing_tasks: list[_TaskRef] | None = None
    consuming_dags: list[_DagRef] | None = None


class _DatasetsV1(_Wire):
    datasets: list[_DatasetV1]
    total_entries: int | None = None


class _AssetV2(_Wire):
    id: int
    name: str
    uri: str
    group: str | None = None
    extra: dict[str, Any] | None = None
    producing_tasks: list[_TaskRef] | None = None
    scheduled_dags: list[_DagRef] | None = None


class _AssetsV2(_Wire):
    assets: list[_AssetV2]
    total_entries: int | None = None


class _RunRefV1(_Wire):
    dag_id: str | None = None
    dag_run_id: str | None = None


class _RunRefV2(_Wire):
    dag_id: str | None = None
    run_id: str | None = None


class _EventV1(_Wire):
    id: int
    dataset_id: int
    dataset_uri: str | None = None
    extra: dict[str, Any] | None = None
    source_dag_id: str | None = None
    source_task_id: str | None = None
    source_run_id: str | None = None
    source_map_index: int | None = None
    created_dagruns: list[_RunRefV1] | None = None
    timestamp: AwareDatetime


class _EventsV1(_Wire):
    dataset_events: list[_EventV1]
    total_entries: int


class _EventV2(_Wire):
    id: int
    asset_id: int
    name: str | None = None
    uri: str | None = None
    extra: dict[str, Any] | None = None
    source_dag_id: str | None = None
    source_task_id: str | None = None
    source_run_id: str | None = None
    source_map_index: int | None = None
    created_dagruns: list[_RunRefV2] | None = None
    timestamp: AwareDatetime
    partition_key: str | None = None


class _EventsV2(_Wire):
    asset_events: list[_EventV2]
    total_entries: int


def _asset_from_v1(w: _DatasetV1) -> AirflowAsset:
    return AirflowAsset(
        id=w.id,
        name=w.uri,
        uri=w.uri,
        extra=w.extra,
        producing_tasks=tuple(sorted({(t.dag_id, t.task_id) for t in w.producing_tasks or ()})),
        consuming_dags=tuple(sorted({d.dag_id for d in w.consuming_dags or ()})),
    )


def _asset_from_v2(w: _AssetV2) -> AirflowAsset:
    return AirflowAsset(
        id=w.id,
        name=w.name,
        uri=w.uri,
        group=w.group or None,
        extra=w.extra,
        producing_tasks=tuple(sorted({(t.dag_id, t.task_id) for t in w.producing_tasks or ()})),
        consuming_dags=tuple(sorted({d.dag_id for d in w.scheduled_dags or ()})),
    )


def _event_from_v1(w: _EventV1) -> AirflowAssetEvent:
    return AirflowAssetEvent(
        id=w.id,
        asset_id=w.dataset_id,
        name=w.dataset_uri,
        uri=w.dataset_uri,
        timestamp=w.timestamp,
        extra=w.extra,
        source_dag_id=w.source_dag_id,
        source_task_id=w.source_task_id,
        source_run_id=w.source_run_id,
        source_map_index=w.source_map_index,
        created_dag_runs=tuple(
            (r.dag_id, r.dag_run_id) for r in w.created_dagruns or () if r.dag_id and r.dag_run_id
        ),
    )


def _event_from_v2(w: _EventV2) -> AirflowAssetEvent:
    return AirflowAssetEvent(
        id=w.id,
        asset_id=w.asset_id,
        name=w.name,
        uri=w.uri,
        timestamp=w.timestamp,
        extra=w.extra,
        source_dag_id=w.source_dag_id,
        source_task_id=w.source_task_id,
        source_run_id=w.source_run_id,
        source_map_index=w.source_map_index,
        created_dag_runs=tuple(
            (r.dag_id, r.run_id) for r in w.created_dagruns or () if r.dag_id and r.run_id
        ),
        partition_key=w.partition_key,
    )


# -- calls ------------------------------------------------------------------------------------------------


def list_airflow_assets(instance: AirflowInstance, *, include_inactive: bool = False) -> list[AirflowAsset]:
    """Every dataset (Airflow 2) or asset (Airflow 3) of the instance, by id.

    Airflow 3 lists only active assets (declared by a DAG file that still exists) unless `include_inactive`;
    Airflow 2 always lists every dataset, including orphaned ones.
    """
    v = instance.api_version
    if v == "v2":
        endpoint = "GET /api/v2/assets"

        def fetch2(offset: int, limit: int) -> tuple[list[AirflowAsset], int | None]:
            params = {"order_by": "id", "limit": limit, "offset": offset}
            params["only_active"] = "false" if include_inactive else "true"
            r = instance._http.call(
                "GET", "/api/v2/assets", what="the assets", params=params, parse=p.parser(_AssetsV2, endpoint)
            )
            return [_asset_from_v2(a) for a in r.value.assets], r.value.total_entries

        assets = instance._collect(fetch2, key=lambda a: a.id)
    else:
        endpoint = "GET /api/v1/datasets"

        def fetch1(offset: int, limit: int) -> tuple[list[AirflowAsset], int | None]:
            r = instance._http.call(
                "GET",
                "/api/v1/datasets",
                what="the datasets",
                params={"order_by": "id", "limit": limit, "offset": offset},
                parse=p.parser(_DatasetsV1, endpoint),
            )
            return [_asset_from_v1(d) for d in r.value.datasets], r.value.total_entries

        assets = instance._collect(fetch1, key=lambda a: a.id)
    assets.sort(key=lambda a: a.id)
    return assets


def get_asset_events_page(
    instance: AirflowInstance, *, offset: int = 0, limit: int | None = None
) -> AssetEventsPage:
    """One page of every asset event, newest first (`order_by=-timestamp`): exactly one request.

    On Airflow 3 ties are ordered by descending id; on Airflow 2 their order is unspecified (and may change
    between two requests). `total_entries` counts every event. The feed (`feed/asset_events.py`) pages.
    """
    page_limit = instance._page_limit(offset, limit)
    v = instance.api_version
    params = {"order_by": "-timestamp", "limit": page_limit, "offset": offset}
    if v == "v2":
        r2 = instance._http.call(
            "GET",
            "/api/v2/assets/events",
            what="the asset events",
            params=params,
            parse=p.parser(_EventsV2, "GET /api/v2/assets/events"),
        )
        return AssetEventsPage.model_construct(
            events=tuple(_event_from_v2(e) for e in r2.value.asset_events),
            total_entries=r2.value.total_entries,
            server_time=instance._http.date_of(r2.response),
        )
    r1 = instance._http.call(
        "GET",
        "/api/v1/datasets/events",
        what="the dataset events",
        params=params,
        parse=p.parser(_EventsV1, "GET /api/v1/datasets/events"),
    )
    return AssetEventsPage.model_construct(
        events=tuple(_event_from_v1(e) for e in r1.value.dataset_events),
        total_entries=r1.value.total_entries,
        server_time=instance._http.date_of(r1.response),
    )


def post_asset_event(
    instance: AirflowInstance, asset: AirflowAsset, *, extra: dict[str, Any] | None = None
) -> AirflowAssetEvent:
    """Record an event of `asset` through Airflow's API (as an external producer would); returns it.

    Airflow adds `"from_rest_api": true` to `extra` and triggers the DAGs scheduled on the asset. Not
    idempotent: if the answer is lost and the HTTP layer retries, Airflow may record two events (build the
    instance with `max_retries=0` where that matters).
    """
    if not isinstance(asset, AirflowAsset):
        raise AirflowConfigError(f"`asset` must be an AirflowAsset (see list_airflow_assets), got {asset!r}.")
    body: dict[str, Any] = {"extra": dict(extra or {})}
    if instance.api_version == "v2":
        body["asset_id"] = asset.id
        r2 = instance._http.call(
            "POST",
            "/api/v2/assets/events",
            what=f"asset {asset.name!r}",
            json_body=body,
            ok=(200, 201),
            parse=p.parser(_EventV2, "POST /api/v2/assets/events"),
        )
        return _event_from_v2(r2.value)
    body["dataset_uri"] = asset.uri
    r1 = instance._http.call(
        "POST",
        "/api/v1/datasets/events",
        what=f"dataset {asset.uri!r}",
        json_body=body,
        ok=(200, 201),
        parse=p.parser(_EventV1, "POST /api/v1/datasets/events"),
    )
    return _event_from_v1(r1.value)


def find_asset(assets: Sequence[AirflowAsset], *, uri: str, name: str | None = None) -> AirflowAsset | None:
    """The asset of `assets` with this URI (and name, when given), or None."""
    for asset in assets:
        if asset.uri == uri and (name is None or asset.name == name):
            return asset
    return None
