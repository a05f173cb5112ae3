"""Typed records of what Airflow reports, the same for Airflow 2 (REST v1) and Airflow 3 (REST v2).

The client validates every answer into these records (pydantic), so the rest of airpeer never touches raw
JSON and never sees which API version produced it. Datetimes are always timezone-aware (UTC).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

#: Airflow run states that end a DAG run. Airflow has no other terminal DagRun state in 2.x or 3.x.
SUCCESS = "success"
FAILED = "failed"
TERMINAL_RUN_STATES: tuple[str, ...] = (SUCCESS, FAILED)


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Dag(_Record):
    """One Airflow DAG, as listed by `GET /dags`."""

    dag_id: str
    display_name: str | None = None
    description: str | None = None
    tags: tuple[str, ...] = ()
    owners: tuple[str, ...] = ()
    #: Human-readable schedule: a cron expression, a preset such as "@daily", a timedelta, or None.
    schedule: str | None = None
    timetable_description: str | None = None
    fileloc: str | None = None
    file_token: str | None = None
    is_paused: bool | None = None
    #: False when Airflow no longer finds the DAG in its files (v1 `is_active`, v2 `not is_stale`).
    is_active: bool = True
    last_parsed_time: datetime | None = None


class Task(_Record):
    """One task of a DAG, as listed by `GET /dags/{dag_id}/tasks`."""

    dag_id: str
    task_id: str
    operator: str | None = None
    downstream_task_ids: tuple[str, ...] = ()
    display_name: str | None = None
    owner: str | None = None
    trigger_rule: str | None = None
    #: How many times Airflow retries a failed try (None when Airflow does not say).
    retries: int | None = None
    #: True for a dynamically mapped task (`.expand`): one task instance per map index in each run.
    is_mapped: bool = False
    doc_md: str | None = None


class DagRun(_Record):
    """One DAG run."""

    dag_id: str
    run_id: str
    state: str
    run_type: str | None = None
    #: None for manual runs on Airflow 3.
    logical_date: datetime | None = None
    queued_at: datetime | None = None
    start_date: datetime | None = None
    end_date: datetime | None = None
    data_interval_start: datetime | None = None
    data_interval_end: datetime | None = None
    conf: dict[str, Any] = Field(default_factory=dict)
    note: str | None = None
    triggered_by: str | None = None

    @property
    def is_finished(self) -> bool:
        return self.state in TERMINAL_RUN_STATES

    @property
    def succeeded(self) -> bool:
        return self.state == SUCCESS


class TaskInstance(_Record):
    """One task instance (one map index of one task in one DAG run), in its latest try."""

    dag_id: str
    run_id: str
    task_id: str
    #: -1 for a task that is not dynamically mapped; 0, 1, ... for the instances of an `.expand` task.
    map_index: int = -1
    state: str | None = None
    try_number: int | None = None
    start_date: datetime | None = None
    end_date: datetime | None = None
    #: The DAG run's logical date (v1 `execution_date`); None for a manual run on Airflow 3.
    logical_date: datetime | None = None
    operator: str | None = None
    duration: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.state == SUCCESS


#: Task instance states that end a task instance for good (a failed try that will be retried is
#: `up_for_retry`, not `failed`).
TERMINAL_TASK_STATES: tuple[str, ...] = (SUCCESS, FAILED)


class TaskInstancesPage(_Record):
    """One page of task instances, with what the server said about the whole result and its own clock."""

    task_instances: tuple[TaskInstance, ...]
    total_entries: int
    #: The server's clock when it answered (HTTP `Date` header), or None if it sent none.
    server_time: datetime | None = None


class RunsPage(_Record):
    """One page of DAG runs, with what the server said about the whole result and its own clock."""

    runs: tuple[DagRun, ...]
    total_entries: int
    #: The server's clock when it answered (HTTP `Date` header), or None if it sent none.
    server_time: datetime | None = None


class DagVersion(_Record):
    """A version of a DAG (Airflow 3): a new one appears whenever the parsed DAG changes."""

    #: A UUIDv7, so ids sort by creation time.
    id: str
    dag_id: str
    version_number: int
    bundle_name: str | None = None
    bundle_version: str | None = None


class DagVersionsPage(_Record):
    """One page of DAG versions, and how many the whole listing holds."""

    versions: tuple[DagVersion, ...]
    total_entries: int
