"""The names both sides of a proxied task agree on: the Dagster job of a task and the tags of its runs.

Imported by the proxy inside Airflow (no Dagster there) and by `dagster_airpeer.migrate`, which defines the jobs
in the code location, so that the proxy finds its job by name without asking Dagster which assets are mapped.
"""

from __future__ import annotations

import hashlib
import json
import re

#: Run tags set by the proxy. A retry attaches to a run carrying the same four `RUN_MATCH_TAGS`: matching on
#: the Airflow run id alone would mix up DAGs, whose `scheduled__<date>` run ids are the same.
INSTANCE_TAG = "airpeer/airflow_instance"
DAG_ID_TAG = "airpeer/dag_id"
RUN_ID_TAG = "airpeer/run_id"
TASK_ID_TAG = "airpeer/task_id"
TRY_NUMBER_TAG = "airpeer/try_number"
LOGICAL_DATE_TAG = "airpeer/logical_date"
RUN_MATCH_TAGS = (INSTANCE_TAG, DAG_ID_TAG, RUN_ID_TAG, TASK_ID_TAG)

#: Job tags set by `dagster_airpeer.migrate` on a job whose assets are time-partitioned: the proxy formats the
#: Airflow logical date with them to get the run's `dagster/partition`.
PARTITION_FMT_TAG = "airpeer/partition_fmt"
PARTITION_TIMEZONE_TAG = "airpeer/partition_timezone"

#: The class name of a proxied task ends with this (`{original class}ProxiedToDagster`). Airflow records it as the
#: task instance's `operator`, so the peering sensor knows that Dagster materialized that task's assets itself.
PROXIED_OPERATOR_SUFFIX = "ProxiedToDagster"

#: Dagster's own tags read by the proxy.
PARTITION_TAG = "dagster/partition"
PARENT_RUN_ID_TAG = "dagster/parent_run_id"
WILL_RETRY_TAG = "dagster/will_retry"

_PREFIX = "airpeer_proxy"
_UNSAFE = re.compile(r"[^A-Za-z0-9_]+")


def _readable(part: str) -> str:
    return _UNSAFE.sub("_", part).strip("_") or "x"


def proxy_job_name(instance_name: str, dag_id: str, task_id: str) -> str:
    """The Dagster job that materializes the assets mapped to task `task_id` of DAG `dag_id`.

    Readable parts for the Dagster UI, and a digest of the exact triple: `a.b`/`a_b` (or a task id with a task
    group's dot) would otherwise share a name, and Dagster job names allow only letters, digits and `_`.
    """
    exact = json.dumps([instance_name, dag_id, task_id], separators=(",", ":"))
    digest = hashlib.sha256(exact.encode()).hexdigest()[:10]
    return f"{_PREFIX}__{_readable(instance_name)}__{_readable(dag_id)}__{_readable(task_id)}__{digest}"
