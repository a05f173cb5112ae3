"""The Airflow client of airpeer: talks to a running Airflow 2 (REST v1) or 3 (REST v2), never to Dagster.

```python
from dagster_airpeer.airflow import AirflowBasicAuthBackend, AirflowInstance

airflow = AirflowInstance(
    AirflowBasicAuthBackend("http://localhost:8080", "admin", "admin"),
    name="my_airflow",
)
for dag in airflow.list_dags():
    print(dag.dag_id, dag.schedule)
```
"""

from .assets import (
    AirflowAsset,
    AirflowAssetEvent,
    AssetEventsPage,
    find_asset,
    get_asset_events_page,
    list_airflow_assets,
    post_asset_event,
)
from .auth import AirflowAuthBackend, AirflowBasicAuthBackend, AirflowTokenAuthBackend
from .errors import (
    AirflowAuthError,
    AirflowConfigError,
    AirflowConnectionError,
    AirflowError,
    AirflowNotFoundError,
    AirflowResponseError,
    AirflowTimeoutError,
    AirflowVersionError,
)
from .instance import AirflowInstance
from .managed import AirflowAstronomerAuthBackend, AirflowComposerAuthBackend, AirflowMwaaAuthBackend
from .models import (
    TERMINAL_RUN_STATES,
    TERMINAL_TASK_STATES,
    Dag,
    DagRun,
    DagVersion,
    DagVersionsPage,
    RunsPage,
    Task,
    TaskInstance,
    TaskInstancesPage,
)

__all__ = [
    "TERMINAL_RUN_STATES",
    "TERMINAL_TASK_STATES",
    "AirflowAsset",
    "AirflowAssetEvent",
    "AirflowAstronomerAuthBackend",
    "AirflowAuthBackend",
    "AirflowAuthError",
    "AirflowBasicAuthBackend",
    "AirflowComposerAuthBackend",
    "AirflowConfigError",
    "AirflowConnectionError",
    "AirflowError",
    "AirflowInstance",
    "AirflowMwaaAuthBackend",
    "AirflowNotFoundError",
    "AirflowResponseError",
    "AirflowTimeoutError",
    "AirflowTokenAuthBackend",
    "AirflowVersionError",
    "AssetEventsPage",
    "Dag",
    "DagRun",
    "DagVersion",
    "DagVersionsPage",
    "RunsPage",
    "Task",
    "TaskInstance",
    "TaskInstancesPage",
    "find_asset",
    "get_asset_events_page",
    "list_airflow_assets",
    "post_asset_event",
]
