"""Stage 3, observe: each task of ``rebuild_customers_list`` is mapped to the assets it builds.

- ``load_raw_customers`` builds ``raw_data/raw_customers`` (the duckdb table ``raw.raw_customers``);
- ``build_dbt_models`` builds the dbt project's models, ``stg_customers`` and ``customers``, described by
  dagster-dbt from the project's manifest (``@dbt_assets``);
- ``export_customers`` builds ``customers_csv`` (the file the marketing team reads).

Dagster then shows the lineage ``raw_data/raw_customers -> stg_customers -> customers -> customers_csv ->
airflow_instance_one/dag/rebuild_customers_list`` and, on each mapped asset, the task that builds it (task id,
operator, a link to the task in Airflow). Airflow still runs everything; the airpeer sensor records each mapped
asset when its task succeeds (a materialization with the task instance's metadata, while the run may still run).

The dbt manifest is built from the project by ``make dbt-manifest`` (``make demo`` does it first); it is not
committed. ``$TUTORIAL_DBT_PROJECT_DIR`` points at the dbt project (default: ``../dbt_project``).
"""

import os
import sys
from pathlib import Path

import dagster as dg
from dagster_dbt import DbtCliResource, DbtProject, dbt_assets

from dagster_airpeer import (
    AirflowBasicAuthBackend,
    AirflowInstance,
    assets_with_task_mappings,
    build_defs_from_airflow_instance,
)

EXAMPLE_DIR = Path(os.environ.get("TUTORIAL_EXAMPLE_DIR") or Path(__file__).resolve().parent.parent)


def dbt_project_path() -> Path:
    """The tutorial's dbt project (the one the Airflow task ``build_dbt_models`` builds)."""
    return Path(os.environ.get("TUTORIAL_DBT_PROJECT_DIR") or EXAMPLE_DIR / "dbt_project").resolve()


def dbt_executable() -> str:
    """dbt, as the DAG finds it: the one next to the Python running this (the venv's, which need not be on PATH)."""
    return os.environ.get("TUTORIAL_DBT_EXECUTABLE") or str(Path(sys.executable).parent / "dbt")


dbt_project = DbtProject(project_dir=dbt_project_path(), profiles_dir=dbt_project_path())
if not dbt_project.manifest_path.is_file():
    # dagster-dbt's own error is a bare missing file; say how to make it.
    raise FileNotFoundError(
        f"the dbt manifest {dbt_project.manifest_path} is missing: run `make dbt-manifest` (or `dbt parse` in "
        f"{dbt_project.project_dir}) first"
    )


@dbt_assets(manifest=dbt_project.manifest_path, project=dbt_project)
def dbt_project_assets(context: dg.AssetExecutionContext, dbt: DbtCliResource):
    """The dbt models; in this stage Airflow builds them (``build_dbt_models``), Dagster only observes."""
    yield from dbt.cli(["build"], context=context).stream()


mapped_assets = assets_with_task_mappings(
    dag_id="rebuild_customers_list",
    task_mappings={
        # The dbt project's source `raw.raw_customers` has this key too (its `meta.dagster.asset_key` in
        # dbt_project/models/staging/sources.yml), so the dbt models depend on this spec.
        "load_raw_customers": [dg.AssetSpec(key=["raw_data", "raw_customers"])],
        "build_dbt_models": [dbt_project_assets],
        "export_customers": [dg.AssetSpec(key="customers_csv", deps=["customers"])],
    },
)


defs = build_defs_from_airflow_instance(
    airflow_instance=AirflowInstance(
        auth_backend=AirflowBasicAuthBackend(
            webserver_url=os.environ.get("AIRFLOW_URL", "http://127.0.0.1:8080"),
            username=os.environ.get("AIRFLOW_USERNAME", "admin"),
            password=os.environ.get("AIRFLOW_PASSWORD", "admin"),
        ),
        name="airflow_instance_one",
    ),
    defs=dg.Definitions(
        assets=mapped_assets,
        # Only needed to run the models from Dagster, which this stage does not do (Airflow runs them).
        resources={"dbt": DbtCliResource(project_dir=dbt_project, dbt_executable=dbt_executable())},
    ),
    # The tests shorten it; 30 s is the library's default.
    sensor_minimum_interval_seconds=int(os.environ.get("TUTORIAL_SENSOR_INTERVAL_SECONDS", "30")),
)
