"""The tutorial's Airflow DAG: rebuild the customers list every day.

``load_raw_customers`` -> ``build_dbt_models`` -> ``export_customers``:

1. load the CRM export shipped with the example (``data/raw_customers.csv``) into ``raw.raw_customers``
   of a duckdb database;
2. ``dbt build`` the project in ``dbt_project/`` (a staging view and the ``customers`` table, with their
   tests);
3. write the ``customers`` table to ``customers.csv``, the file the marketing team reads (and the Dagster
   asset check of ``dagster_defs/peer_with_check.py`` inspects).

Every path comes from an environment variable, read when a task runs (not when the file is parsed), with a
default relative to the example directory, so the same file serves ``make demo``, the tests and a hand-run
Airflow:

- ``TUTORIAL_EXAMPLE_DIR``: the example directory (default: the parent of this file's folder);
- ``TUTORIAL_DBT_PROJECT_DIR``: the dbt project (default ``$TUTORIAL_EXAMPLE_DIR/dbt_project``);
- ``TUTORIAL_RAW_CUSTOMERS_CSV``: the raw export (default ``$TUTORIAL_EXAMPLE_DIR/data/raw_customers.csv``);
- ``TUTORIAL_OUTPUT_DIR``: where the duckdb database, dbt's target/logs and ``customers.csv`` go (default
  ``$TUTORIAL_EXAMPLE_DIR/data/out``);
- ``TUTORIAL_DBT_EXECUTABLE``: dbt (default: the ``dbt`` next to the Python running the task, i.e. the
  venv's).

Written for Airflow 3 (``airflow.sdk``); it also parses on Airflow 2.11.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

try:
    from airflow.sdk import dag, task
except ImportError:  # Airflow 2.x has no task SDK; the decorators have the same names and signatures there.
    from airflow.decorators import dag, task  # type: ignore[no-redef,attr-defined]


@dataclass(frozen=True)
class TutorialPaths:
    """Where one run of the DAG reads and writes."""

    example_dir: Path
    dbt_project_dir: Path
    raw_customers_csv: Path
    output_dir: Path
    dbt_executable: Path

    @property
    def duckdb_path(self) -> Path:
        """The database shared by the three tasks (and dbt)."""
        return self.output_dir / "tutorial.duckdb"

    @property
    def customers_csv(self) -> Path:
        """The DAG's deliverable."""
        return self.output_dir / "customers.csv"

    @classmethod
    def from_env(cls) -> TutorialPaths:
        """Resolve the paths from the environment of the running task."""
        example_dir = Path(os.environ.get("TUTORIAL_EXAMPLE_DIR") or Path(__file__).resolve().parent.parent)
        return cls(
            example_dir=example_dir,
            dbt_project_dir=Path(os.environ.get("TUTORIAL_DBT_PROJECT_DIR") or example_dir / "dbt_project"),
            raw_customers_csv=Path(
                os.environ.get("TUTORIAL_RAW_CUSTOMERS_CSV") or example_dir / "data" / "raw_customers.csv"
            ),
            output_dir=Path(os.environ.get("TUTORIAL_OUTPUT_DIR") or example_dir / "data" / "out"),
            # Not resolved: the venv's bin/python links to the base interpreter, whose folder has no dbt.
            dbt_executable=Path(
                os.environ.get("TUTORIAL_DBT_EXECUTABLE") or Path(sys.executable).parent / "dbt"
            ),
        )


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
        import duckdb

        paths = TutorialPaths.from_env()
        paths.output_dir.mkdir(parents=True, exist_ok=True)
        # A rebuild that fails half-way must not leave yesterday's list looking like today's.
        paths.customers_csv.unlink(missing_ok=True)
        if not paths.raw_customers_csv.is_file():
            raise FileNotFoundError(f"raw customers export not found: {paths.raw_customers_csv}")
        with duckdb.connect(str(paths.duckdb_path)) as con:
            con.execute("create schema if not exists raw")
            # all_varchar: cleaning types is the staging model's job, not the loader's.
            con.execute(
                "create or replace table raw.raw_customers as "
                "select * from read_csv(?, header = true, all_varchar = true)",
                [str(paths.raw_customers_csv)],
            )
            row = con.execute("select count(*) from raw.raw_customers").fetchone()
        count = int(row[0]) if row else 0
        print(f"loaded {count} rows from {paths.raw_customers_csv} into {paths.duckdb_path}")
        return count

    @task
    def build_dbt_models() -> None:
        """Run ``dbt build`` (models and their tests); a failing test fails the task."""
        paths = TutorialPaths.from_env()
        command = [
            str(paths.dbt_executable),
            "build",
            "--project-dir",
            str(paths.dbt_project_dir),
            "--profiles-dir",
            str(paths.dbt_project_dir),
            # Outside the project, so that concurrent copies of the example (demo, tests) do not share them.
            "--target-path",
            str(paths.output_dir / "dbt_target"),
            "--log-path",
            str(paths.output_dir / "dbt_logs"),
        ]
        env = {**os.environ, "TUTORIAL_DUCKDB_PATH": str(paths.duckdb_path)}
        print("running:", " ".join(command))
        result = subprocess.run(
            command,
            cwd=paths.dbt_project_dir,
            env=env,
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
        import duckdb

        paths = TutorialPaths.from_env()
        partial = paths.customers_csv.with_name(paths.customers_csv.name + ".partial")
        with duckdb.connect(str(paths.duckdb_path), read_only=True) as con:
            con.execute(
                "copy (select * from main.customers order by customer_id) to ? (header, delimiter ',')",
                [str(partial)],
            )
            row = con.execute("select count(*) from main.customers").fetchone()
        # Readers (the Dagster check) must never see a half-written file.
        os.replace(partial, paths.customers_csv)
        count = int(row[0]) if row else 0
        print(f"exported {count} customers to {paths.customers_csv}")
        return count

    load_raw_customers() >> build_dbt_models() >> export_customers()


rebuild_customers_list()
