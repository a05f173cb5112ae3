"""Stage 4, migrate: the three tasks of ``rebuild_customers_list`` become executable Dagster assets.

The mappings are the observe stage's, with real assets instead of specs (``customers_assets.py``: the duckdb
load, the dbt models through dagster-dbt, the CSV export; the load and the export call the very functions the
Airflow tasks call). For each mapped task, ``build_defs_from_airflow_instance`` defines a proxy job (named after
the instance, DAG and task) that a proxied Airflow task launches.

Which tasks run where is decided on the Airflow side, in ``airflow_dags/proxied_state/rebuild_customers_list.yaml``:
every task starts ``proxied: false`` (Airflow runs it, the sensor records its assets, as in the observe stage);
set one to ``true`` and, from the next parse of the DAG file, that task asks Dagster to materialize its assets,
waits for the run and succeeds or fails with it. The sensor records no second materialization for it. Setting it
back to ``false`` is the rollback. ``make demo TUTORIAL_STAGE=migrate`` runs this stage.
"""

import os
import sys
from pathlib import Path

import dagster as dg

# `dagster dev -f` puts its working directory on sys.path, not this file's folder.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from customers_assets import customers_csv, dbt_project_assets, dbt_resource, raw_customers

from dagster_airpeer import (
    AirflowBasicAuthBackend,
    AirflowInstance,
    assets_with_task_mappings,
    build_defs_from_airflow_instance,
)

mapped_assets = assets_with_task_mappings(
    dag_id="rebuild_customers_list",
    task_mappings={
        "load_raw_customers": [raw_customers],
        "build_dbt_models": [dbt_project_assets],
        "export_customers": [customers_csv],
    },
)

defs = build_defs_from_airflow_instance(
    airflow_instance=AirflowInstance(
        auth_backend=AirflowBasicAuthBackend(
            webserver_url=os.environ.get("AIRFLOW_URL", "http://127.0.0.1:8080"),
            username=os.environ.get("AIRFLOW_USERNAME", "admin"),
            password=os.environ.get("AIRFLOW_PASSWORD", "admin"),
        ),
        # The proxied tasks name this instance ($AIRPEER_AIRFLOW_INSTANCE on the Airflow side, set by make demo).
        name="airflow_instance_one",
    ),
    defs=dg.Definitions(assets=mapped_assets, resources={"dbt": dbt_resource()}),
    # The tests shorten it; 30 s is the library's default.
    sensor_minimum_interval_seconds=int(os.environ.get("TUTORIAL_SENSOR_INTERVAL_SECONDS", "30")),
)
