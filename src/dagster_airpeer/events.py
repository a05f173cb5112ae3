"""The Dagster events that stand for one completed Airflow DAG run."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import dagster as dg

from .airflow.models import DagRun

#: The built-in check on every peered DAG asset: passes when an Airflow run succeeds, fails when one fails.
RUN_STATUS_CHECK_NAME = "airflow_run_status"

#: Conf larger than this (as JSON) is shown truncated: asset metadata is for reading, not for storage.
CONF_DISPLAY_LIMIT = 4000

AssetEvent = dg.AssetMaterialization | dg.AssetCheckEvaluation

#: Metadata entry naming the completion an event stands for: `<instance name>:<18 hex digits>`. The sensor
#: finds events a crashed tick already stored by it (docs/reliability.md).
COMPLETION_METADATA_KEY = "airpeer/completion"


def completion_id(instance_name: str, run: DagRun) -> str:
    """The identity of one completion (dag id, run id, end date) of one peered instance, 27 bytes or so."""
    end = run.end_date.isoformat(timespec="microseconds") if run.end_date is not None else ""
    digest = hashlib.blake2b(f"{run.dag_id}\n{run.run_id}\n{end}".encode(), digest_size=9).hexdigest()
    return f"{instance_name}:{digest}"


def event_completion_id(event: AssetEvent) -> str | None:
    """The completion id an event of airpeer carries (None for an event from elsewhere)."""
    value = event.metadata.get(COMPLETION_METADATA_KEY)
    value = getattr(value, "value", value)
    return value if isinstance(value, str) else None


def _conf_metadata(conf: dict[str, Any]) -> dg.MetadataValue:
    try:
        text = json.dumps(conf, sort_keys=True, default=str)
    except (TypeError, ValueError):
        text = repr(conf)
    if len(text) <= CONF_DISPLAY_LIMIT:
        return dg.MetadataValue.json(conf) if isinstance(conf, dict) else dg.MetadataValue.text(text)
    return dg.MetadataValue.text(f"{text[:CONF_DISPLAY_LIMIT]}... ({len(text)} characters, truncated)")


def run_metadata(run: DagRun, run_url: str) -> dict[str, Any]:
    """Metadata describing an Airflow run, shared by its materialization and its check evaluation."""
    metadata: dict[str, Any] = {
        "airflow/dag_id": run.dag_id,
        "airflow/run_id": run.run_id,
        "airflow/run_state": run.state,
        "airflow/run_type": run.run_type or "unknown",
        "airflow/run_url": dg.MetadataValue.url(run_url),
    }
    for label, value in (
        ("airflow/logical_date", run.logical_date),
        ("airflow/start_date", run.start_date),
        ("airflow/end_date", run.end_date),
    ):
        if value is not None:
            metadata[label] = dg.MetadataValue.timestamp(value)
    if run.start_date is not None and run.end_date is not None:
        # A run whose end is before its start (clock trouble in Airflow) shows a negative duration rather
        # than being dropped.
        metadata["airflow/duration_seconds"] = (run.end_date - run.start_date).total_seconds()
    if run.conf:
        metadata["airflow/conf"] = _conf_metadata(run.conf)
    return metadata


def events_for_run(
    run: DagRun,
    asset_key: dg.AssetKey,
    *,
    run_url: str,
    status_changed: bool = False,
    completion: str | None = None,
) -> list[AssetEvent]:
    """The events of one completed run: one, or two when a success ends a recorded failure.

    A successful run is a materialization; a failed run is a failing `airflow_run_status` evaluation (a
    materialization would be a lie). `status_changed` is for a success right after a recorded failure (a
    recovery): it also passes the check, so a failing check never outlives the failure. Nothing else passes
    it: a DAG's first recorded success is a materialization alone, one event per completion, and a check
    "not evaluated" means that no failure has been recorded since the DAG was peered.

    `completion` (from `completion_id`) is stored as metadata so that a later tick can tell which
    completions are already in Dagster's event log.
    """
    metadata = run_metadata(run, run_url)
    if completion is not None:
        metadata[COMPLETION_METADATA_KEY] = completion
    events: list[AssetEvent] = []
    if run.succeeded:
        events.append(
            dg.AssetMaterialization(
                asset_key=asset_key,
                description=f"Airflow DAG run {run.run_id} succeeded.",
                metadata=metadata,
            )
        )
        if not status_changed:
            return events
    events.append(
        dg.AssetCheckEvaluation(
            asset_key=asset_key,
            check_name=RUN_STATUS_CHECK_NAME,
            passed=run.succeeded,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"Airflow DAG run {run.run_id} ended in state '{run.state}'.",
            metadata=metadata,
        )
    )
    return events
