"""Federation: two Airflow instances in one code location, and a DAG of one that waits for a DAG of the other.

- `warehouse` (federation_extract) and `reporting` (federation_report) are peered by two
  `build_defs_from_airflow_instance` calls: each has its own sensor, its own cursor and its own asset keys.
- The reporting instance's translator declares that federation_report depends on the warehouse's
  federation_extract, so the asset graph shows the dependency across the two Airflows.
- `trigger_report_after_extract` triggers federation_report on the reporting Airflow each time the warehouse
  peering records a new materialization of federation_extract. The Airflow run id is derived from the upstream
  Airflow run (its run key), so a tick evaluated twice triggers one run. The sensor records nothing itself:
  the reporting peering sensor records the triggered run once, when it ends, like any other run.

Settings (environment variables): WAREHOUSE_AIRFLOW_URL, REPORTING_AIRFLOW_URL, and for each a _USERNAME and
_PASSWORD (WAREHOUSE_AIRFLOW_USERNAME, ...). See README.md.
"""

import os

import dagster as dg

from dagster_airpeer import (
    AirflowBasicAuthBackend,
    AirflowError,
    AirflowInstance,
    AirflowNotFoundError,
    Dag,
    DagsterAirflowTranslator,
    build_defs_from_airflow_instance,
)

UPSTREAM_DAG = "federation_extract"
DOWNSTREAM_DAG = "federation_report"
#: The run id prefix of the runs this sensor triggers: `federated__<upstream Airflow run id>`.
RUN_ID_PREFIX = "federated__"


def _instance(prefix: str, name: str) -> AirflowInstance:
    return AirflowInstance(
        auth_backend=AirflowBasicAuthBackend(
            webserver_url=os.environ[f"{prefix}_AIRFLOW_URL"],
            username=os.environ[f"{prefix}_AIRFLOW_USERNAME"],
            password=os.environ[f"{prefix}_AIRFLOW_PASSWORD"],
        ),
        name=name,
    )


warehouse = _instance("WAREHOUSE", "warehouse")
reporting = _instance("REPORTING", "reporting")


def _federation_dags(dag: Dag) -> bool:
    return "federation" in dag.tags


# The warehouse DAG's asset key, as the default translator names it: [instance name, "dag", dag_id].
EXTRACT_KEY = DagsterAirflowTranslator().get_asset_key(
    warehouse.name, Dag(dag_id=UPSTREAM_DAG, tags=("federation",))
)


class ReportingTranslator(DagsterAirflowTranslator):
    """The reporting instance's DAG assets, with federation_report downstream of the warehouse's extract."""

    def get_asset_spec(
        self, instance_name: str, dag: Dag, *, dag_url: str, source: str | None = None
    ) -> dg.AssetSpec:
        spec = super().get_asset_spec(instance_name, dag, dag_url=dag_url, source=source)
        if dag.dag_id == DOWNSTREAM_DAG:
            return spec.merge_attributes(deps=[EXTRACT_KEY])
        return spec


def trigger_dag_on_materialization(
    *,
    name: str,
    upstream: dg.AssetKey,
    downstream: AirflowInstance,
    dag_id: str,
    minimum_interval_seconds: int = 30,
) -> dg.SensorDefinition:
    """A sensor that triggers `dag_id` on `downstream` once per new materialization of `upstream`.

    Its cursor is the storage id of the last materialization it handled; its first tick starts after the newest
    one, so that turning it on does not replay history. The Airflow run id is the run key: derived from the
    upstream Airflow run, so a tick evaluated again (its cursor not stored, say) finds the run already there.
    """

    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Triggers DAG {dag_id} on Airflow instance '{downstream.name}' when "
        f"{upstream.to_user_string()} materializes.",
    )
    def _trigger(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        if context.cursor is None:
            newest = context.instance.fetch_materializations(upstream, limit=1).records
            context.update_cursor(str(newest[0].storage_id if newest else 0))
            return dg.SkipReason("first tick: waiting for the next materialization")
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=upstream, after_storage_id=int(context.cursor)),
            limit=100,
            ascending=True,
        ).records
        triggered: list[str] = []
        for record in records:
            materialization = record.asset_materialization
            upstream_run = materialization.metadata.get("airflow/run_id") if materialization else None
            upstream_run_id = str(upstream_run.value) if upstream_run is not None else str(record.storage_id)
            run_id = f"{RUN_ID_PREFIX}{upstream_run_id}"
            try:
                downstream.trigger_dag_run(
                    dag_id,
                    run_id=run_id,
                    conf={"upstream_asset": upstream.to_user_string(), "upstream_run_id": upstream_run_id},
                )
                triggered.append(run_id)
            except AirflowError as exc:
                # Triggered by an earlier evaluation of this materialization: the run is there, nothing to do.
                try:
                    downstream.get_dag_run(dag_id, run_id)
                except AirflowNotFoundError:
                    raise exc from None
                context.log.info(f"{dag_id} run {run_id} was already triggered")
            # Per materialization, so that a failure further on resumes after what is done.
            context.update_cursor(str(record.storage_id))
        if not triggered:
            return dg.SkipReason(f"no new materialization of {upstream.to_user_string()}")
        return dg.SkipReason(f"triggered {dag_id} on '{downstream.name}': {', '.join(triggered)}")

    return _trigger


defs = dg.Definitions.merge(
    build_defs_from_airflow_instance(airflow_instance=warehouse, dag_selector_fn=_federation_dags),
    build_defs_from_airflow_instance(
        airflow_instance=reporting, dag_selector_fn=_federation_dags, translator=ReportingTranslator()
    ),
    dg.Definitions(
        sensors=[
            trigger_dag_on_materialization(
                name="trigger_report_after_extract",
                upstream=EXTRACT_KEY,
                downstream=reporting,
                dag_id=DOWNSTREAM_DAG,
            )
        ]
    ),
)
