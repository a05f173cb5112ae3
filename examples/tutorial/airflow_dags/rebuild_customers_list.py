"""The tutorial's Airflow DAG: rebuild the customers list every day.

``load_raw_customers`` -> ``build_dbt_models`` -> ``export_customers``:

1. load the CRM export shipped with the example (``data/raw_customers.csv``) into ``raw.raw_customers``
   of a duckdb database;
2. ``dbt build`` the project in ``dbt_project/`` (a staging view and the ``customers`` table, with their
   tests);
3. write the ``customers`` table to ``customers.csv``, the file the marketing team reads (and the Dagster
   asset check of ``dagster_defs/peer_with_check.py`` inspects).

The steps' work is in ``tutorial_pipeline.py`` (this folder), shared with the
Dagster assets of the migrate stage; it documents the ``TUTORIAL_*`` variables that set the paths.

Migrate stage: the file ends with ``proxying_to_dagster``, which reads ``proxied_state/rebuild_customers_list.yaml``
(or the directory ``$TUTORIAL_PROXIED_STATE_DIR``). Every task is ``proxied: false`` there, so Airflow runs all
three itself, as in the earlier stages; a task set to ``proxied: true`` asks Dagster to materialize its assets
instead (``dagster_defs/migrate.py``), with ``$AIRPEER_DAGSTER_URL`` and ``$AIRPEER_AIRFLOW_INSTANCE`` saying
which Dagster and which name this Airflow has there (``make demo`` sets both).

Written for Airflow 3 (``airflow.sdk``); it also parses on Airflow 2.11.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

# Airflow's DAG processor and workers put the DAG folder on sys.path; a DagBag made by hand (the tests) may not.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import tutorial_pipeline as pipeline
from tutorial_pipeline import TutorialPaths

from dagster_airpeer.in_airflow import load_proxied_state_from_yaml, proxying_to_dagster

try:
    from airflow.sdk import dag, task
except ImportError:  # Airflow 2.x has no task SDK; the decorators have the same names and signatures there.
    from airflow.decorators import dag, task  # type: ignore[no-redef,attr-defined]

__all__ = ["TutorialPaths", "rebuild_customers_list"]


@dag(
    dag_id="rebuild_customers_list",
    description="Load the CRM export, build the dbt models, export customers.csv.",
    schedule="@daily",
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    is_paused_upon_creation=False,
    # The three tasks share one duckdb file, which only one process may open for writing at a time.
    max_active_runs=1,
    default_args={"retries": 0},
    tags=["tutorial"],
)
def rebuild_customers_list() -> None:
    """Rebuild ``customers.csv`` from the raw CRM export."""

    @task
    def load_raw_customers() -> int:
        """Copy the raw CSV into ``raw.raw_customers``; return the number of rows loaded."""
        return pipeline.load_raw_customers(TutorialPaths.from_env())

    @task
    def build_dbt_models() -> None:
        """Run ``dbt build`` (models and their tests); a failing test fails the task."""
        paths = TutorialPaths.from_env()
        command = [str(paths.dbt_executable), *pipeline.dbt_build_args(paths)]
        print("running:", " ".join(command))
        result = subprocess.run(
            command,
            cwd=paths.dbt_project_dir,
            env={**os.environ, **pipeline.dbt_env(paths)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
        print(result.stdout)
        if result.returncode != 0:
            raise RuntimeError(f"dbt build failed with exit code {result.returncode}")

    @task
    def export_customers() -> int:
        """Write the ``customers`` table to ``customers.csv``; return the number of rows written."""
        return pipeline.export_customers(TutorialPaths.from_env())

    load_raw_customers() >> build_dbt_models() >> export_customers()


rebuild_customers_list()

# Last, once the DAG exists: the tasks set to `proxied: true` in the YAML run in Dagster from now on.
proxying_to_dagster(
    global_vars=globals(),
    proxied_state=load_proxied_state_from_yaml(
        os.environ.get("TUTORIAL_PROXIED_STATE_DIR") or Path(__file__).resolve().parent / "proxied_state"
    ),
)
