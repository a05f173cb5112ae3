"""Seed finished DAG runs and their task instances straight into Airflow's database, through its ORM tables.

Run with the interpreter of the Airflow under test and that instance's environment (``AIRFLOW_HOME``...)::

    python seed_airflow.py MANIFEST.json

MANIFEST.json is written by :meth:`benchmarks.manifest.Manifest.write`. Every existing run of the listed DAGs
is deleted first, so a case always starts from exactly its manifest. Bulk inserts on the mapped tables let
thousands of runs land in about a second (the REST API or the scheduler would need minutes). Works on
Airflow 2.11 and 3.3: columns a version lacks are left out, column defaults fill the rest.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timedelta
from typing import Any


def main(manifest_path: str) -> None:
    started = time.monotonic()
    from airflow import __version__ as airflow_version
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    with open(manifest_path) as handle:
        manifest = json.load(handle)
    dag_ids: list[str] = manifest["dag_ids"]
    task_ids: list[str] = manifest["task_ids"]
    run_table = DagRun.__table__
    ti_table = TaskInstance.__table__
    run_columns = set(run_table.columns.keys())
    ti_columns = set(ti_table.columns.keys())
    airflow3 = "logical_date" in run_columns

    runs: list[dict[str, Any]] = []
    tis: list[dict[str, Any]] = []
    step = timedelta(seconds=1)
    for dag_id, run_id, state, logical, start, end in manifest["runs"]:
        logical_date = datetime.fromisoformat(logical)
        start_date = datetime.fromisoformat(start)
        end_date = datetime.fromisoformat(end)
        row: dict[str, Any] = {
            "dag_id": dag_id,
            "run_id": run_id,
            "state": state,
            "run_type": "manual",
            "queued_at": start_date - step,
            "start_date": start_date,
            "end_date": end_date,
            "data_interval_start": logical_date,
            "data_interval_end": logical_date + timedelta(days=1),
            "conf": {},
            "updated_at": end_date,
        }
        if airflow3:
            row["logical_date"] = logical_date
            row["run_after"] = logical_date
        else:
            row["execution_date"] = logical_date
            row["external_trigger"] = True
        runs.append({k: v for k, v in row.items() if k in run_columns})
        # Three tasks one after the other inside the run; a failed run fails on its last task.
        span = (end_date - start_date) / len(task_ids)
        for position, task_id in enumerate(task_ids):
            ti_state = "failed" if state == "failed" and position == len(task_ids) - 1 else "success"
            ti_start = start_date + span * position
            ti: dict[str, Any] = {
                "dag_id": dag_id,
                "run_id": run_id,
                "task_id": task_id,
                "map_index": -1,
                "state": ti_state,
                "start_date": ti_start,
                "end_date": ti_start + span,
                "duration": span.total_seconds(),
                "try_number": 1,
                "max_tries": 0,
                "hostname": "bench",
                "unixname": "bench",
                "pool": "default_pool",
                "pool_slots": 1,
                "queue": "default",
                "priority_weight": 1,
                "operator": "EmptyOperator",
                # The v1 API refuses to serialize a task instance whose executor_config is NULL.
                "executor_config": {},
                "updated_at": ti_start + span,
            }
            tis.append({k: v for k, v in ti.items() if k in ti_columns})

    with create_session() as session:
        # Task instances reference their run: delete them first.
        session.execute(delete(ti_table).where(ti_table.c.dag_id.in_(dag_ids)))
        session.execute(delete(run_table).where(run_table.c.dag_id.in_(dag_ids)))
        if runs:
            session.execute(run_table.insert(), runs)
            session.execute(ti_table.insert(), tis)
    elapsed = time.monotonic() - started
    print(json.dumps({"airflow": airflow_version, "runs": len(runs), "task_instances": len(tis),
                      "seconds": round(elapsed, 3)}))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1])
