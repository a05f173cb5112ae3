"""What Dagster recorded for Airflow runs, compared with what Airflow completed.

A *completion* is (dag_id, run_id, end_date) with the end date as a UTC ISO string with microseconds. The
sensor turns each completion it delivers into exactly one *primary* event: a materialization for a successful
run, a failing `airflow_run_status` check evaluation for a failed run. (A success right after a failure of the
same DAG also passes the check again: a secondary event, at most one per completion.) Every event carries
`airflow/dag_id`, `airflow/run_id` and `airflow/end_date` as metadata. The ledger reads them back from the
Dagster instance's event log (runless events are stored under the empty run id) and counts, per completion:

* lost: completed in Airflow, no primary event in Dagster;
* doubled: more than one primary event, or more than one passing check, for it;
* unexpected: an event for a completion Airflow was never seen to have (the oracle missed it, or the
  sensor invented it);
* delay: when Dagster stored the first event minus the run's end date.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import dagster as dg
from dagster._core.events import DagsterEventType

Completion = tuple[str, str, str]

_RUNLESS_RUN_ID = ""


def completion_key(dag_id: str, run_id: str, end: datetime | float | str) -> Completion:
    """The comparable identity of a completion; `end` as a datetime, a POSIX timestamp or an ISO string."""
    if isinstance(end, (int, float)):
        when = datetime.fromtimestamp(end, tz=timezone.utc)
    elif isinstance(end, str):
        when = datetime.fromisoformat(end.replace("Z", "+00:00"))
    else:
        when = end
    return dag_id, run_id, when.astimezone(timezone.utc).isoformat(timespec="microseconds")


@dataclass
class RecordedEvent:
    """One stored event about an Airflow run."""

    kind: str  # "materialization" | "check"
    completion: Completion
    passed: bool | None
    stored_at: float
    metadata: dict[str, Any]


def _value(metadata: dict[str, Any], key: str) -> Any:
    item = metadata.get(key)
    return getattr(item, "value", item)


def recorded_events(instance: dg.DagsterInstance) -> list[RecordedEvent]:
    """Every runless materialization and check evaluation that describes an Airflow run."""
    entries = instance.all_logs(
        _RUNLESS_RUN_ID,
        of_type={DagsterEventType.ASSET_MATERIALIZATION, DagsterEventType.ASSET_CHECK_EVALUATION},
    )
    out: list[RecordedEvent] = []
    for entry in entries:
        event = entry.dagster_event
        if event is None:
            continue
        data: Any = event.event_specific_data
        if event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            metadata = dict(data.materialization.metadata)
            kind, passed = "materialization", None
        else:
            metadata = dict(data.metadata)
            kind, passed = "check", bool(data.passed)
        dag_id, run_id, end = (
            _value(metadata, k) for k in ("airflow/dag_id", "airflow/run_id", "airflow/end_date")
        )
        if dag_id is None or run_id is None or end is None:
            continue
        out.append(
            RecordedEvent(
                kind, completion_key(str(dag_id), str(run_id), float(end)), passed, entry.timestamp, metadata
            )
        )
    return out


def primary_counts(events: Iterable[RecordedEvent]) -> Counter[Completion]:
    """How many primary events (materialization, or failing check) each completion has."""
    return Counter(e.completion for e in events if e.kind == "materialization" or e.passed is False)


@dataclass
class Comparison:
    """The verdict of comparing Airflow's completions with Dagster's events."""

    completions: int
    runs: int
    events: int
    lost: list[Completion] = field(default_factory=list)
    doubled: list[Completion] = field(default_factory=list)
    unexpected: list[Completion] = field(default_factory=list)
    max_delay_seconds: float | None = None
    worst: Completion | None = None
    #: When Dagster stored each completion's first event (seconds since the epoch).
    first_stored: dict[Completion, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.lost and not self.doubled and not self.unexpected

    def summary(self) -> str:
        delay = "n/a" if self.max_delay_seconds is None else f"{self.max_delay_seconds:.1f} s"
        return (
            f"{self.runs} runs, {self.completions} completions, {self.events} events: lost {len(self.lost)}, "
            f"doubled {len(self.doubled)}, unexpected {len(self.unexpected)}, largest delay {delay}"
        )


def compare(
    expected: Iterable[Completion], events: Iterable[RecordedEvent], *, since: datetime | None = None
) -> Comparison:
    """Compare completions seen in Airflow with events stored in Dagster (see the module docstring).

    With `since`, only completions that ended at or after it count, on both sides (a shared Airflow holds
    older runs that a test did not ask the sensor for).
    """
    cut = completion_key("", "", since)[2] if since is not None else ""
    wanted = {c for c in expected if c[2] >= cut}
    events = [e for e in events if e.completion[2] >= cut]
    primary = primary_counts(events)
    passing = Counter(e.completion for e in events if e.kind == "check" and e.passed)
    first_stored: dict[Completion, float] = {}
    for event in events:
        if event.completion not in first_stored or event.stored_at < first_stored[event.completion]:
            first_stored[event.completion] = event.stored_at
    result = Comparison(completions=len(wanted), runs=len({(d, r) for d, r, _ in wanted}), events=len(events))
    result.first_stored = first_stored
    result.lost = sorted(c for c in wanted if primary[c] == 0)
    result.doubled = sorted(c for c in set(primary) | set(passing) if primary[c] > 1 or passing[c] > 1)
    result.unexpected = sorted(c for c in set(primary) | set(passing) if c not in wanted)
    for completion in wanted:
        if completion in first_stored:
            ended = datetime.fromisoformat(completion[2]).timestamp()
            delay = first_stored[completion] - ended
            if result.max_delay_seconds is None or delay > result.max_delay_seconds:
                result.max_delay_seconds, result.worst = delay, completion
    return result


__all__ = [
    "Comparison",
    "Completion",
    "RecordedEvent",
    "compare",
    "completion_key",
    "primary_counts",
    "recorded_events",
]
