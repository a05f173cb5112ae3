"""The operator a proxied task becomes: its `execute` asks Dagster to materialize the task's mapped assets.

`proxying_to_dagster` does not replace a proxied task's operator object: it keeps it (task id, upstream and
downstream, task group, retries, pool, trigger rule, callbacks, templated fields) and changes its class to a
subclass of both `DagsterProxyOperator` (first, so its `execute` and `on_kill` win) and the original class.

Subclass `DagsterProxyOperator` to say where Dagster is and how to log in, then pass it as `operator_class`:

```python
class MyProxy(DagsterProxyOperator):
    dagster_url = "https://my-org.dagster.cloud/prod"
    airflow_instance_name = "my_airflow"  # the `AirflowInstance(name=...)` of the Dagster code location

    def get_dagster_headers(self, context):
        return {"Dagster-Cloud-Api-Token": Variable.get("dagster_token")}
```

Without a subclass, the settings come from the environment of the Airflow workers: `AIRPEER_DAGSTER_URL`,
`AIRPEER_AIRFLOW_INSTANCE`, and `AIRPEER_DAGSTER_TOKEN` (sent as `Dagster-Cloud-Api-Token`) if set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from ._airflow import BaseOperator
from .client import DagsterGraphQLClient, DagsterProxyError, DagsterRunProxy, ProxyTask

URL_ENV = "AIRPEER_DAGSTER_URL"
INSTANCE_ENV = "AIRPEER_AIRFLOW_INSTANCE"
TOKEN_ENV = "AIRPEER_DAGSTER_TOKEN"  # noqa: S105 - the name of a variable, not a secret


class DagsterProxyOperator(BaseOperator):  # type: ignore[misc]
    """Materializes, in Dagster, the assets mapped to this task, waits for the run and fails with it.

    Class attributes (override in a subclass) or, where None, the environment:

    - `dagster_url`: the webserver or Dagster+ deployment URL (`AIRPEER_DAGSTER_URL`);
    - `airflow_instance_name`: the Airflow instance's name in the Dagster code location (`AIRPEER_AIRFLOW_INSTANCE`);
    - `dagster_location_name` / `dagster_repository_name`: skip the lookup of the job's code location;
    - `dagster_deadline_seconds`: the longest wait for the Dagster run (then it is terminated);
    - `dagster_poll_max_seconds`: the longest pause between two polls of the run;
    - `dagster_timeout_seconds` / `dagster_max_retries`: per HTTP request.
    """

    dagster_url: str | None = None
    airflow_instance_name: str | None = None
    dagster_location_name: str | None = None
    dagster_repository_name: str | None = None
    dagster_deadline_seconds: float = 24 * 3600.0
    dagster_poll_max_seconds: float = 15.0
    dagster_timeout_seconds: float = 10.0
    dagster_max_retries: int = 4
    # Airflow's scheduler marks an EmptyOperator successful without running it: a proxied one must run.
    inherits_from_empty_operator = False

    def get_dagster_url(self, context: Mapping[str, Any]) -> str:
        """The Dagster URL (without `/graphql`)."""
        url = self.dagster_url or os.environ.get(URL_ENV)
        if not url:
            raise DagsterProxyError(
                f"No Dagster URL for proxied task {self.task_id!r}: set {URL_ENV} on the Airflow workers or "
                f"`dagster_url` on a subclass of {DagsterProxyOperator.__name__}."
            )
        return url

    def get_dagster_headers(self, context: Mapping[str, Any]) -> dict[str, str]:
        """HTTP headers of every request to Dagster, e.g. a Dagster+ API token."""
        token = os.environ.get(TOKEN_ENV)
        return {"Dagster-Cloud-Api-Token": token} if token else {}

    def get_airflow_instance_name(self, context: Mapping[str, Any]) -> str:
        """This Airflow's name in the Dagster code location (`AirflowInstance(name=...)`)."""
        name = self.airflow_instance_name or os.environ.get(INSTANCE_ENV)
        if not name:
            raise DagsterProxyError(
                f"No Airflow instance name for proxied task {self.task_id!r}: set {INSTANCE_ENV} on the Airflow "
                f"workers or `airflow_instance_name` on a subclass of {DagsterProxyOperator.__name__} (the "
                "`name=` of the AirflowInstance in the Dagster code location)."
            )
        return name

    def get_asset_selection(self, context: Mapping[str, Any]) -> Sequence[Sequence[str]] | None:
        """Asset keys (as paths) to materialize, a subset of the task's job; None for all its assets."""
        return None

    def build_dagster_client(self, context: Mapping[str, Any]) -> DagsterGraphQLClient:
        """The GraphQL client; override to pass a custom httpx transport (proxies, certificates)."""
        return DagsterGraphQLClient(
            self.get_dagster_url(context),
            self.get_dagster_headers(context),
            timeout=self.dagster_timeout_seconds,
            max_retries=self.dagster_max_retries,
        )

    def _proxy_task(self, context: Mapping[str, Any]) -> ProxyTask:
        dag_run = context["dag_run"]
        ti = context["ti"]
        logical = context.get("logical_date") or getattr(dag_run, "logical_date", None)
        return ProxyTask(
            instance_name=self.get_airflow_instance_name(context),
            dag_id=dag_run.dag_id,
            run_id=dag_run.run_id,
            task_id=self.task_id,
            try_number=int(ti.try_number),
            # pendulum (Airflow's) to a plain aware datetime.
            logical_date=datetime.fromtimestamp(logical.timestamp(), tz=timezone.utc) if logical else None,
        )

    def execute(self, context: Any) -> None:
        """Launch (or, on a retry, attach to) the task's Dagster run and wait for it; raise if it fails."""
        task = self._proxy_task(context)
        with self.build_dagster_client(context) as client:
            proxy = DagsterRunProxy(
                client,
                task,
                location_name=self.dagster_location_name,
                repository_name=self.dagster_repository_name,
                asset_selection=self.get_asset_selection(context),
                deadline_seconds=self.dagster_deadline_seconds,
                poll_max=self.dagster_poll_max_seconds,
                logger=self.log,
            )
            # Kept on the operator object that runs: Airflow 3 calls its on_kill while execute is running.
            self._airpeer_proxy = proxy
            try:
                proxy.run()
            except DagsterProxyError:
                raise
            except BaseException:
                # Airflow 2 raises its timeout (and SIGTERM) inside execute and calls on_kill only afterwards:
                # terminate here, while the client is open, so no Dagster run is left behind.
                proxy.terminate()
                raise

    def on_kill(self) -> None:
        """Airflow is killing the task (or it timed out): terminate the Dagster run it follows."""
        proxy: DagsterRunProxy | None = getattr(self, "_airpeer_proxy", None)
        if proxy is not None:
            proxy.terminate()
