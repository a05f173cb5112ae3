"""Which Airflow task instances ran in Dagster (proxied), read from the Dagster runs the proxy tagged.

The peering sensor must not record a second materialization for an asset that Dagster materialized itself for a
proxied task. The evidence is the Dagster run, tagged by the proxy with (instance, dag_id, run_id, task_id): the
task instance's operator name says what the DAG processor last parsed, but the worker reads the proxied state
again when it runs the task, so right after a flag flips the two can disagree.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import dagster as dg

from ..airflow.models import TaskInstance
from ..in_airflow.naming import DAG_ID_TAG, INSTANCE_TAG, RUN_ID_TAG, TASK_ID_TAG

#: A proxy run is created after its task instance starts: looked for from this long before (clock skew between
#: Airflow's hosts and Dagster's).
START_MARGIN = timedelta(minutes=10)
#: A later try may have attached to a run launched by an earlier one: looked for from this long before it.
RETRY_LOOKBACK = timedelta(days=1)
#: A task instance without a start date is looked for from this long before its end.
NO_START_LOOKBACK = timedelta(days=1)


class ProxiedRuns:
    """Answers "did this task instance run in Dagster?" for one tick, with a query of Dagster's runs per span
    of start dates (usually one per tick, only when task instances of mapped tasks succeeded)."""

    def __init__(self, instance: dg.DagsterInstance, instance_name: str) -> None:
        self._dagster = instance
        self._name = instance_name
        #: Runs created from here on (to now) were read.
        self._covered_from: datetime | None = None
        self._found: set[tuple[str, str, str]] = set()
        self.queries = 0

    def ran_in_dagster(self, ti: TaskInstance) -> bool:
        start = ti.start_date or (ti.end_date - NO_START_LOOKBACK if ti.end_date is not None else None)
        if start is None:
            return False
        # A retry may attach to the run an earlier try launched, before this try started.
        lo = start - (START_MARGIN if (ti.try_number or 1) <= 1 else RETRY_LOOKBACK)
        if self._covered_from is None:
            self._read(lo, None)
            self._covered_from = lo
        elif lo < self._covered_from:
            self._read(lo, self._covered_from)
            self._covered_from = lo
        return (ti.dag_id, ti.run_id, ti.task_id) in self._found

    def _read(self, created_after: datetime, created_before: datetime | None) -> None:
        self.queries += 1
        runs = self._dagster.get_runs(
            filters=dg.RunsFilter(
                tags={INSTANCE_TAG: self._name}, created_after=created_after, created_before=created_before
            )
        )
        for run in runs:
            tags = run.tags
            if DAG_ID_TAG in tags and RUN_ID_TAG in tags and TASK_ID_TAG in tags:
                self._found.add((tags[DAG_ID_TAG], tags[RUN_ID_TAG], tags[TASK_ID_TAG]))
