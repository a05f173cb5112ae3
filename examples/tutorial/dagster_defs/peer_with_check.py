"""Stage 2, peer with a check: the peered DAG asset gets a user acceptance test on the file the DAG delivers.

The check ``customers_csv_has_rows`` runs after every successful Airflow run of ``rebuild_customers_list``
(the airpeer sensor requests it when it records the run's materialization) and can also be run by hand from
the asset's Checks tab. It reads the ``customers.csv`` written by the DAG's ``export_customers`` task: the
file is in ``$TUTORIAL_OUTPUT_DIR`` (default ``examples/tutorial/data/out``), which must be the directory the
DAG writes to.
"""

import os
from pathlib import Path

import dagster as dg

from dagster_airpeer import AirflowBasicAuthBackend, AirflowInstance, build_defs_from_airflow_instance

EXAMPLE_DIR = Path(os.environ.get("TUTORIAL_EXAMPLE_DIR") or Path(__file__).resolve().parent.parent)
REBUILD_CUSTOMERS_LIST = dg.AssetKey(["airflow_instance_one", "dag", "rebuild_customers_list"])


def customers_csv_path() -> Path:
    """The export of the DAG, read at check time so that the environment of the code location decides."""
    output_dir = os.environ.get("TUTORIAL_OUTPUT_DIR") or EXAMPLE_DIR / "data" / "out"
    return Path(output_dir) / "customers.csv"


@dg.asset_check(
    asset=REBUILD_CUSTOMERS_LIST,
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
    defs=dg.Definitions(asset_checks=[customers_csv_has_rows]),
    # The tests shorten it; 30 s is the library's default.
    sensor_minimum_interval_seconds=int(os.environ.get("TUTORIAL_SENSOR_INTERVAL_SECONDS", "30")),
)
