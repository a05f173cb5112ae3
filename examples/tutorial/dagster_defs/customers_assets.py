"""The tutorial's three steps as executable Dagster assets, shared by the migrate and decommission stages.

- ``raw_data/raw_customers``: ``tutorial_pipeline.load_raw_customers``, the same function the Airflow task
  ``load_raw_customers`` calls;
- the dbt models ``stg_customers`` and ``customers``: dagster-dbt's ``@dbt_assets`` over the project's
  manifest, running ``dbt build`` with the same arguments as the task ``build_dbt_models`` (so the project's
  tests run too, as the models' asset checks);
- ``customers_csv``: ``tutorial_pipeline.export_customers``, as the task ``export_customers``.

``tutorial_pipeline`` lives in the DAG folder (``../airflow_dags``), which Airflow puts on ``sys.path``; here it
is added by hand, since ``dagster dev -f`` only adds its working directory. The dbt manifest is built by
``make dbt-manifest`` (``make demo`` does it first).
"""

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DbtCliResource, DbtProject, dbt_assets

EXAMPLE_DIR = Path(os.environ.get("TUTORIAL_EXAMPLE_DIR") or Path(__file__).resolve().parent.parent)
_DAG_FOLDER = str(Path(__file__).resolve().parent.parent / "airflow_dags")
if _DAG_FOLDER not in sys.path:
    sys.path.insert(0, _DAG_FOLDER)

import tutorial_pipeline as pipeline  # noqa: E402  (found through the path added above)
from tutorial_pipeline import TutorialPaths  # noqa: E402

RAW_CUSTOMERS = dg.AssetKey(["raw_data", "raw_customers"])
CUSTOMERS_CSV = dg.AssetKey("customers_csv")


def dbt_project_path() -> Path:
    """The tutorial's dbt project (the one the Airflow task ``build_dbt_models`` builds)."""
    return Path(os.environ.get("TUTORIAL_DBT_PROJECT_DIR") or EXAMPLE_DIR / "dbt_project").resolve()


dbt_project = DbtProject(project_dir=dbt_project_path(), profiles_dir=dbt_project_path())
if not dbt_project.manifest_path.is_file():
    # dagster-dbt's own error is a bare missing file; say how to make it.
    raise FileNotFoundError(
        f"the dbt manifest {dbt_project.manifest_path} is missing: run `make dbt-manifest` (or `dbt parse` in "
        f"{dbt_project.project_dir}) first"
    )


@dg.asset(key=RAW_CUSTOMERS, description="The CRM export loaded into raw.raw_customers (duckdb).")
def raw_customers() -> dg.MaterializeResult:
    """Load the raw CSV, exactly as the Airflow task does."""
    rows = pipeline.load_raw_customers(TutorialPaths.from_env())
    return dg.MaterializeResult(metadata={"rows": rows})


@dbt_assets(manifest=dbt_project.manifest_path, project=dbt_project)
def dbt_project_assets(context: dg.AssetExecutionContext, dbt: DbtCliResource) -> Iterator[Any]:
    """The dbt models and their tests, built with the Airflow task's database, target and logs."""
    paths = TutorialPaths.from_env()
    # dbt's profile reads the database path from the environment, which dagster-dbt hands down to dbt; this
    # process is the run's own, so setting it here touches nothing else.
    os.environ.update(pipeline.dbt_env(paths))
    args = pipeline.dbt_build_args(paths)
    # dagster-dbt names the project, profiles and target itself; keep the rest (the log path).
    keep = args[args.index("--log-path") :]
    yield from dbt.cli(["build", *keep], context=context, target_path=paths.dbt_target_dir).stream()


@dg.asset(
    key=CUSTOMERS_CSV, deps=["customers"], description="customers.csv, the file the marketing team reads."
)
def customers_csv() -> dg.MaterializeResult:
    """Export the customers table, exactly as the Airflow task does."""
    paths = TutorialPaths.from_env()
    rows = pipeline.export_customers(paths)
    return dg.MaterializeResult(
        metadata={"rows": rows, "path": dg.MetadataValue.path(str(paths.customers_csv))}
    )


def dbt_resource() -> DbtCliResource:
    """dbt for the models' asset: the one next to the running Python (the venv's), as the DAG finds it."""
    executable = os.environ.get("TUTORIAL_DBT_EXECUTABLE") or str(Path(sys.executable).parent / "dbt")
    return DbtCliResource(project_dir=dbt_project, dbt_executable=executable)
