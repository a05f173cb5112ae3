"""Adapter for dagster-airlift 0.29.27, run with the interpreter of ``.venvs/airlift``.

Uses the library's public API as its tutorial does (``AirflowInstance``, ``AirflowBasicAuthBackend``,
``build_defs_from_airflow_instance``). Requests are counted with a response hook on every ``requests``
session the auth backend hands out (dagster-airlift asks its backend for a new session per request).
The only non-public name used is the sensor's cursor record, to start the sensor at the same position as
airpeer's (dagster-airlift itself starts one minute before its first tick).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dagster as dg
import requests
from adapter_common import Adapter, TaskMappings, serve, task_of_key, task_specs
from dagster_airlift.constants import AIRFLOW_RUN_ID_METADATA_KEY, SOURCE_CODE_METADATA_KEY
from dagster_airlift.core import (
    AirflowBasicAuthBackend,
    AirflowInstance,
    assets_with_task_mappings,
    build_defs_from_airflow_instance,
)


class CountingBasicAuthBackend(AirflowBasicAuthBackend):
    """Basic auth, plus a count of every HTTP response received on the sessions it creates."""

    def __init__(
        self, webserver_url: str, username: str, password: str, record: Callable[[str, str], None]
    ) -> None:
        super().__init__(webserver_url=webserver_url, username=username, password=password)
        self._record = record

    def _on_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        request = response.request
        self._record(request.method or "?", urlsplit(request.url or "").path)

    def get_session(self) -> requests.Session:
        session = super().get_session()
        session.hooks["response"].append(self._on_response)
        return session


class AirliftAdapter(Adapter):
    library = "dagster-airlift"

    def __init__(self) -> None:
        super().__init__()
        self._backend: CountingBasicAuthBackend | None = None

    def _instance_for(self) -> AirflowInstance:
        if self._backend is None:
            self._backend = CountingBasicAuthBackend(self.url, self.username, self.password, self.record)
        return AirflowInstance(auth_backend=self._backend, name=self.name)

    def build_defs(
        self,
        *,
        show_dag_source: bool,
        cache_dir: Path | None,
        history_from: float,
        task_mappings: TaskMappings | None = None,
    ) -> dg.Definitions:
        # dagster-airlift has no cache between loads: cache_dir is ignored. Its sensor start is set by
        # initial_cursor(), not here.
        defs = None
        if task_mappings is not None:
            # The observe cases: each task's asset, mapped with dagster-airlift's own API.
            assets: list[Any] = []
            for dag_id, by_task in task_specs(task_mappings).items():
                assets += assets_with_task_mappings(dag_id=dag_id, task_mappings=by_task)
            defs = dg.Definitions(assets=assets)
        return build_defs_from_airflow_instance(
            airflow_instance=self._instance_for(),
            source_code_retrieval_enabled=show_dag_source,
            defs=defs,
        )

    def initial_cursor(self, history_from: float) -> str | None:
        from dagster._serdes import serialize_value
        from dagster_airlift.core.sensor.sensor_builder import AirflowPollingSensorCursor

        return serialize_value(
            AirflowPollingSensorCursor(end_date_gte=history_from, end_date_lte=None, dag_query_offset=0)
        )

    def identify(self, event: Any) -> list[Any]:
        run_id = event.metadata[AIRFLOW_RUN_ID_METADATA_KEY]
        run_id = getattr(run_id, "value", run_id)
        task = task_of_key(event.asset_key)
        if task is not None:
            # dagster-airlift puts the run on a task's materialization, not the task: the key names it.
            return ["task", task[0], run_id, task[1], None]
        dag_id = event.asset_key.path[-1]
        if isinstance(event, dg.AssetMaterialization):
            return ["mat", dag_id, run_id, None]
        return ["check", dag_id, run_id, bool(getattr(event, "passed", False))]

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version

        return {**super().versions(), "dagster-airlift": version("dagster-airlift")}


# Make the source-code metadata key visible to the shared asset count (it looks for "source" in names).
assert "source" in SOURCE_CODE_METADATA_KEY.lower()

if __name__ == "__main__":
    serve(AirliftAdapter())
