"""Airflow's answers (REST v1 of Airflow 2, REST v2 of Airflow 3) -> the records of `models.py`.

Each answer is validated in one go by a pydantic model of its documented shape (only the fields airpeer
uses; others are ignored), straight from the JSON bytes, then turned into records without a second
validation. A missing field or a wrong type becomes `AirflowResponseError` naming the endpoint and the
field; a body that is not JSON becomes `BodyNotJSON`, which the HTTP layer retries (it is usually an answer
cut short).

Field names come from Airflow's sources: `airflow/api_connexion/schemas/*.py` and `openapi/v1.yaml` (2.11),
`airflow/api_fastapi/core_api/datamodels/*.py` (3.x).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal, TypeVar

import httpx

# Airflow always sends timezone-aware timestamps; a naive one would be compared with aware ones downstream
# (the feed's watermark), so it is rejected here as a malformed answer naming the field.
from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from ._retry import BodyNotJSON
from .errors import AirflowResponseError
from .models import Dag, DagRun, DagVersion, Task, TaskInstance

ApiVersion = Literal["v1", "v2"]

W = TypeVar("W", bound=BaseModel)


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=False)


# -- DAGs -------------------------------------------------------------------------------------------


class _Tag(_Wire):
    name: str


class _DagCommon(_Wire):
    dag_id: str
    dag_display_name: str | None = None
    description: str | None = None
    tags: list[_Tag] | None = None
    owners: list[str] | None = None
    timetable_description: str | None = None
    fileloc: str | None = None
    file_token: str | None = None
    is_paused: bool | None = None
    last_parsed_time: AwareDatetime | None = None


class DagV1(_DagCommon):
    """A DAG of `GET /api/v1/dags` (Airflow 2)."""

    is_active: bool | None = None
    #: {"__type": "CronExpression", "value": "0 0 * * *"} | {"__type": "TimeDelta", days, seconds,
    #: microseconds} | {"__type": "RelativeDelta", ...} | null
    schedule_interval: dict[str, Any] | None = None


class DagV2(_DagCommon):
    """A DAG of `GET /api/v2/dags` (Airflow 3)."""

    is_stale: bool | None = None
    timetable_summary: str | None = None


class DagsV1(_Wire):
    dags: list[DagV1]
    total_entries: int


class DagsV2(_Wire):
    dags: list[DagV2]
    total_entries: int


_RELATIVEDELTA_FIELDS = (
    "years",
    "months",
    "days",
    "leapdays",
    "hours",
    "minutes",
    "seconds",
    "microseconds",
    "year",
    "month",
    "day",
    "hour",
    "minute",
    "second",
    "microsecond",
)


def schedule_from_v1(schedule_interval: dict[str, Any] | None) -> str | None:
    """A readable schedule from Airflow 2's `schedule_interval` object."""
    if not schedule_interval:
        return None
    kind = schedule_interval.get("__type")
    if kind == "CronExpression":
        value = schedule_interval.get("value")
        return str(value) if value is not None else None
    if kind == "TimeDelta":
        delta = timedelta(
            days=_int(schedule_interval.get("days")),
            seconds=_int(schedule_interval.get("seconds")),
            microseconds=_int(schedule_interval.get("microseconds")),
        )
        return str(delta)
    if kind == "RelativeDelta":
        parts = [
            f"{key}={schedule_interval[key]}"
            for key in _RELATIVEDELTA_FIELDS
            if schedule_interval.get(key) not in (None, 0)
        ]
        return f"relativedelta({', '.join(parts)})"
    return str(schedule_interval.get("value") or kind or "") or None


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _dag_common(w: _DagCommon) -> dict[str, Any]:
    return {
        "dag_id": w.dag_id,
        "display_name": w.dag_display_name,
        "description": w.description,
        "tags": tuple(sorted(t.name for t in w.tags)) if w.tags else (),
        "owners": tuple(w.owners) if w.owners else (),
        "timetable_description": w.timetable_description,
        "fileloc": w.fileloc,
        "file_token": w.file_token,
        "is_paused": w.is_paused,
        "last_parsed_time": w.last_parsed_time,
    }


def dag_from_v1(w: DagV1) -> Dag:
    return Dag.model_construct(
        **_dag_common(w),
        schedule=schedule_from_v1(w.schedule_interval),
        is_active=True if w.is_active is None else w.is_active,
    )


def dag_from_v2(w: DagV2) -> Dag:
    return Dag.model_construct(
        **_dag_common(w),
        schedule=w.timetable_summary if w.timetable_summary not in (None, "None") else None,
        is_active=not w.is_stale,
    )


# -- tasks ------------------------------------------------------------------------------------------


class _ClassRef(_Wire):
    class_name: str | None = None


class TaskWire(_Wire):
    """A task of `GET /api/{v}/dags/{dag_id}/tasks` (same fields in v1 and v2)."""

    task_id: str
    operator_name: str | None = None
    class_ref: _ClassRef | None = None
    downstream_task_ids: list[str] | None = None
    task_display_name: str | None = None
    owner: str | None = None
    trigger_rule: str | None = None
    #: A number in both versions (v1 `fields.Number`, v2 `float | None`): 2 or 2.0.
    retries: float | None = None
    is_mapped: bool | None = None
    doc_md: str | None = None


class TasksWire(_Wire):
    tasks: list[TaskWire]


def task_from_wire(dag_id: str, w: TaskWire) -> Task:
    operator = w.operator_name or (w.class_ref.class_name if w.class_ref else None)
    return Task.model_construct(
        dag_id=dag_id,
        task_id=w.task_id,
        operator=operator,
        downstream_task_ids=tuple(w.downstream_task_ids or ()),
        display_name=w.task_display_name,
        owner=w.owner,
        trigger_rule=w.trigger_rule,
        retries=int(w.retries) if w.retries is not None else None,
        is_mapped=bool(w.is_mapped),
        doc_md=w.doc_md,
    )


# -- DAG runs ---------------------------------------------------------------------------------------


class DagRunWire(_Wire):
    """A DAG run; v1 and v2 share these names (v1 also sends `execution_date`, equal to `logical_date`)."""

    dag_run_id: str
    dag_id: str
    #: Unknown states are kept as they are: a newer Airflow may add some.
    state: str
    run_type: str | None = None
    logical_date: AwareDatetime | None = None
    execution_date: AwareDatetime | None = None
    queued_at: AwareDatetime | None = None
    start_date: AwareDatetime | None = None
    end_date: AwareDatetime | None = None
    data_interval_start: AwareDatetime | None = None
    data_interval_end: AwareDatetime | None = None
    conf: dict[str, Any] | None = None
    note: str | None = None
    triggered_by: str | None = None
    external_trigger: bool | None = None


class DagRunsWire(_Wire):
    dag_runs: list[DagRunWire]
    total_entries: int


def run_from_wire(w: DagRunWire) -> DagRun:
    triggered_by = w.triggered_by
    if triggered_by is None and w.external_trigger is not None:
        # Airflow 2 only says whether something outside the scheduler triggered the run.
        triggered_by = "external" if w.external_trigger else "scheduler"
    return DagRun.model_construct(
        dag_id=w.dag_id,
        run_id=w.dag_run_id,
        state=w.state,
        run_type=w.run_type,
        logical_date=w.logical_date or w.execution_date,
        queued_at=w.queued_at,
        start_date=w.start_date,
        end_date=w.end_date,
        data_interval_start=w.data_interval_start,
        data_interval_end=w.data_interval_end,
        conf=w.conf if w.conf is not None else {},
        note=w.note,
        triggered_by=triggered_by,
    )


# -- DAG versions (Airflow 3) -------------------------------------------------------------------------


class DagVersionWire(_Wire):
    id: str
    dag_id: str
    version_number: int
    bundle_name: str | None = None
    bundle_version: str | None = None


class DagVersionsWire(_Wire):
    dag_versions: list[DagVersionWire]
    total_entries: int


def version_from_wire(w: DagVersionWire) -> DagVersion:
    return DagVersion.model_construct(
        id=w.id,
        dag_id=w.dag_id,
        version_number=w.version_number,
        bundle_name=w.bundle_name,
        bundle_version=w.bundle_version,
    )


# -- task instances ---------------------------------------------------------------------------------


class TaskInstanceWire(_Wire):
    task_id: str
    dag_id: str
    dag_run_id: str
    map_index: int = -1
    state: str | None = None
    try_number: int | None = None
    start_date: AwareDatetime | None = None
    end_date: AwareDatetime | None = None
    logical_date: AwareDatetime | None = None
    execution_date: AwareDatetime | None = None
    operator: str | None = None
    duration: float | None = None


class TaskInstancesWire(_Wire):
    task_instances: list[TaskInstanceWire]
    total_entries: int | None = None


def task_instance_from_wire(w: TaskInstanceWire) -> TaskInstance:
    return TaskInstance.model_construct(
        dag_id=w.dag_id,
        run_id=w.dag_run_id,
        task_id=w.task_id,
        map_index=w.map_index,
        state=w.state,
        try_number=w.try_number,
        start_date=w.start_date,
        end_date=w.end_date,
        logical_date=w.logical_date or w.execution_date,
        operator=w.operator,
        duration=w.duration,
    )


# -- small answers ----------------------------------------------------------------------------------


class VersionWire(_Wire):
    version: str


class SourceWire(_Wire):
    content: str | None = None


# -- validation -------------------------------------------------------------------------------------


def _loc(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(body)"


def validate(model: type[W], response: httpx.Response, endpoint: str) -> W:
    """Validate a JSON answer into `model`; raises BodyNotJSON or AirflowResponseError."""
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if any(e["type"] == "json_invalid" for e in errors):
            raise BodyNotJSON(response) from None
        first = errors[0]
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise AirflowResponseError(
            f"Unexpected answer from Airflow for {endpoint}: field `{_loc(first['loc'])}`: {first['msg']}"
            f"{more}. Is this a supported Airflow version (2.x with REST v1, 3.x with REST v2)?"
        ) from None


def parser(model: type[W], endpoint: str) -> Callable[[httpx.Response], W]:
    """A `parse` function for `HttpSession.call`."""

    def parse(response: httpx.Response) -> W:
        return validate(model, response, endpoint)

    return parse


def parse_json_object(response: httpx.Response, endpoint: str) -> dict[str, Any]:
    """A JSON object answer, not validated further (health checks)."""
    try:
        body = response.json()
    except ValueError:
        raise BodyNotJSON(response) from None
    if not isinstance(body, dict):
        raise AirflowResponseError(f"Unexpected answer from Airflow for {endpoint}: not a JSON object.")
    return body


__all__ = [
    "ApiVersion",
    "DagRunWire",
    "DagRunsWire",
    "DagV1",
    "DagV2",
    "DagVersionWire",
    "DagVersionsWire",
    "DagsV1",
    "DagsV2",
    "SourceWire",
    "TaskInstanceWire",
    "TaskInstancesWire",
    "TaskWire",
    "TasksWire",
    "VersionWire",
    "parser",
    "validate",
    "version_from_wire",
]
