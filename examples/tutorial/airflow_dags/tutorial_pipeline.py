"""The work of the tutorial's three steps, as plain functions: the Airflow tasks of ``rebuild_customers_list.py``
call them, and so do the Dagster assets of the migrate stage (``dagster_defs/customers_assets.py``), so a step
does exactly the same thing wherever it runs. Neither Airflow nor Dagster is imported here.

1. ``load_raw_customers``: the CRM export (``data/raw_customers.csv``) into ``raw.raw_customers`` of a duckdb
   database;
2. ``dbt_build_command`` / ``dbt_env``: how to ``dbt build`` the project in ``dbt_project/`` (a staging view and
   the ``customers`` table, with their tests);
3. ``export_customers``: the ``customers`` table to ``customers.csv``, the file the marketing team reads.

Every path comes from an environment variable, read when a step runs (not at import), with a default relative
to the example directory, so the same code serves ``make demo``, the tests and a hand-run Airflow or Dagster:

- ``TUTORIAL_EXAMPLE_DIR``: the example directory (default: the parent of this file's folder);
- ``TUTORIAL_DBT_PROJECT_DIR``: the dbt project (default ``$TUTORIAL_EXAMPLE_DIR/dbt_project``);
- ``TUTORIAL_RAW_CUSTOMERS_CSV``: the raw export (default ``$TUTORIAL_EXAMPLE_DIR/data/raw_customers.csv``);
- ``TUTORIAL_OUTPUT_DIR``: where the duckdb database, dbt's target/logs and ``customers.csv`` go (default
  ``$TUTORIAL_EXAMPLE_DIR/data/out``);
- ``TUTORIAL_DBT_EXECUTABLE``: dbt (default: the ``dbt`` next to the running Python, i.e. the venv's).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TutorialPaths:
    """Where one run of the pipeline reads and writes."""

    example_dir: Path
    dbt_project_dir: Path
    raw_customers_csv: Path
    output_dir: Path
    dbt_executable: Path

    @property
    def duckdb_path(self) -> Path:
        """The database shared by the three steps (and dbt)."""
        return self.output_dir / "tutorial.duckdb"

    @property
    def customers_csv(self) -> Path:
        """The pipeline's deliverable."""
        return self.output_dir / "customers.csv"

    @property
    def dbt_target_dir(self) -> Path:
        """dbt's target, outside the project so that concurrent copies of the example (demo, tests) do not share it."""
        return self.output_dir / "dbt_target"

    @classmethod
    def from_env(cls) -> TutorialPaths:
        """Resolve the paths from the environment of the running step."""
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


def load_raw_customers(paths: TutorialPaths) -> int:
    """Copy the raw CSV into ``raw.raw_customers``; return the number of rows loaded."""
    import duckdb

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


def dbt_build_args(paths: TutorialPaths) -> list[str]:
    """The arguments of ``dbt build`` after the executable: the project, its profile, target and logs."""
    return [
        "build",
        "--project-dir",
        str(paths.dbt_project_dir),
        "--profiles-dir",
        str(paths.dbt_project_dir),
        "--target-path",
        str(paths.dbt_target_dir),
        "--log-path",
        str(paths.output_dir / "dbt_logs"),
    ]


def dbt_env(paths: TutorialPaths) -> dict[str, str]:
    """What dbt's profile (``dbt_project/profiles.yml``) reads: the duckdb database of this run."""
    return {"TUTORIAL_DUCKDB_PATH": str(paths.duckdb_path)}


def export_customers(paths: TutorialPaths) -> int:
    """Write the ``customers`` table to ``customers.csv``; return the number of rows written."""
    import duckdb

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
