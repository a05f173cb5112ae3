"""Stage 3b, observe with the check on the asset it checks: ``customers_csv_has_rows`` moves onto ``customers_csv``.

The same definitions as ``observe.py``; the user acceptance test of ``peer_with_check.py`` now sits on the
asset that is the file it reads (``customers_csv``, built by the task ``export_customers``) instead of on the
DAG's asset. The sensor requests it (the job ``airflow_instance_one__dag_asset_checks``) each time it records
``customers_csv``, as ``export_customers`` succeeds; it can also be run from that asset's Checks tab. It reads
``customers.csv`` in ``$TUTORIAL_OUTPUT_DIR`` (default ``examples/tutorial/data/out``), which must be the
directory the DAG writes to.
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


def customers_csv_path() -> Path:
    """The export of the DAG, read at check time so that the environment of the code location decides."""
    output_dir = os.environ.get("TUTORIAL_OUTPUT_DIR") or EXAMPLE_DIR / "data" / "out"
    return Path(output_dir) / "customers.csv"


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


@dg.asset_check(
    asset=dg.AssetKey("customers_csv"),
    description="customers.csv exists and has at least one customer.",
)
def customers_csv_has_rows() -> dg.AssetCheckResult:
    """Fail if the export is missing; warn if it holds no customer; report the row count otherwise."""
    path = customers_csv_path()
    location = {"path": dg.MetadataValue.path(str(path))}
    if not path.is_file():
        return dg.AssetCheckResult(passed=False, description="customers.csv is missing", metadata=location)
    with path.open(encoding="utf-8") as lines:
        # The first line is the header; a zero-byte file counts as empty too.
        row_count = max(sum(1 for line in lines if line.strip()) - 1, 0)
    if row_count == 0:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description="customers.csv has no customer",
            metadata={**location, "row_count": 0},
        )
    return dg.AssetCheckResult(passed=True, metadata={**location, "row_count": row_count})


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
        asset_checks=[customers_csv_has_rows],
        # Only needed to run the models from Dagster, which this stage does not do (Airflow runs them).
        resources={"dbt": DbtCliResource(project_dir=dbt_project, dbt_executable=dbt_executable())},
    ),
    # The tests shorten it; 30 s is the library's default.
    sensor_minimum_interval_seconds=int(os.environ.get("TUTORIAL_SENSOR_INTERVAL_SECONDS", "30")),
)
