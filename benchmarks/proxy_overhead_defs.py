"""The Dagster code location of benchmarks/proxy_overhead.py, loaded by `dagster dev`: the task's mapped asset."""

import dagster as dg

from dagster_airpeer import (
    AirflowBasicAuthBackend,
    AirflowInstance,
    assets_with_task_mappings,
    build_defs_from_airflow_instance,
)


@dg.asset
def bench_proxy_work() -> int:
    """The same small work as task `work` of airpeer_bench_proxy does in Airflow."""
    return sum(i * i for i in range(200_000))


defs = build_defs_from_airflow_instance(
    airflow_instance=AirflowInstance(
        auth_backend=AirflowBasicAuthBackend(
            webserver_url=dg.EnvVar("AIRPEER_BENCH_AIRFLOW_URL"),
            username=dg.EnvVar("AIRPEER_BENCH_AIRFLOW_USER"),
            password=dg.EnvVar("AIRPEER_BENCH_AIRFLOW_PASSWORD"),
        ),
        name="bench",
    ),
    defs=dg.Definitions(
        assets=assets_with_task_mappings(
            dag_id="airpeer_bench_proxy", task_mappings={"work": [bench_proxy_work]}
        )
    ),
    dag_selector_fn=lambda dag: dag.dag_id == "airpeer_bench_proxy",
)
