"""Seed finished DAG runs and their task instances straight into Airflow's database, through its ORM tables.

Run with the interpreter of the Airflow under test and that instance's environment (``AIRFLOW_HOME``...)::

    python seed_airflow.py MANIFEST.json [--task-instances SEEDED.json]
    python seed_airflow.py --live MANIFEST.json COMMITS.jsonl

MANIFEST.json is written by :meth:`benchmarks.manifest.Manifest.write`. Every existing run of the listed DAGs
is deleted first, so a case always starts from exactly its manifest. Bulk inserts on the mapped tables let
thousands of runs land in about a second (the REST API or the scheduler would need minutes). Works on
Airflow 2.11 and 3.3: columns a version lacks are left out, column defaults fill the rest.

``--live``: the runs are committed as they end, in real time: every ``BATCH_S`` the runs whose commit time
has come are inserted in one transaction, their ``updated_at`` set to that moment (what Airflow's own commit
does). One JSON line per batch goes to COMMITS.jsonl (commit time, manifest indices); the last line says
``{"done": true}``. The seeder stops by itself once every run is in.

``--task-instances SEEDED.json``: also write every task instance inserted, as ``[dag_id, run_id, task_id,
map_index, state, end_date]`` rows: the ground truth the observe cases check task materializations against.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Any

#: Live mode: how often runs that ended are committed.
BATCH_S = 0.5


def _rows(entry: list[str], task_ids: list[str], run_columns: set[str], ti_columns: set[str],
          updated_at: datetime | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:  # fmt: skip
    """The dag_run row and task instance rows of one manifest entry."""
    dag_id, run_id, state, logical, start, end = entry[:6]
    airflow3 = "logical_date" in run_columns
    step = timedelta(seconds=1)
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
        "updated_at": updated_at or end_date,
    }
    if airflow3:
        row["logical_date"] = logical_date
        row["run_after"] = logical_date
    else:
        row["execution_date"] = logical_date
        row["external_trigger"] = True
    tis: list[dict[str, Any]] = []
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
            "updated_at": updated_at or ti_start + span,
        }
        tis.append({k: v for k, v in ti.items() if k in ti_columns})
    return {k: v for k, v in row.items() if k in run_columns}, tis


def main(manifest_path: str, live_log: str | None = None, task_instances_path: str | None = None) -> None:
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

    with create_session() as session:
        # Task instances reference their run: delete them first.
        session.execute(delete(ti_table).where(ti_table.c.dag_id.in_(dag_ids)))
        session.execute(delete(run_table).where(run_table.c.dag_id.in_(dag_ids)))
    if live_log is not None:
        _live(
            manifest["runs"], task_ids, run_columns, ti_columns, live_log, create_session, run_table, ti_table
        )
        print(json.dumps({"airflow": airflow_version, "runs": len(manifest["runs"]),
                          "task_instances": len(manifest["runs"]) * len(task_ids),
                          "seconds": round(time.monotonic() - started, 3)}))  # fmt: skip
        return

    runs: list[dict[str, Any]] = []
    tis: list[dict[str, Any]] = []
    for entry in manifest["runs"]:
        run_row, ti_rows = _rows(entry, task_ids, run_columns, ti_columns, None)
        runs.append(run_row)
        tis.extend(ti_rows)
    with create_session() as session:
        if runs:
            session.execute(run_table.insert(), runs)
            session.execute(ti_table.insert(), tis)
    if task_instances_path is not None:
        seeded = [
            [
                ti["dag_id"],
                ti["run_id"],
                ti["task_id"],
                ti["map_index"],
                ti["state"],
                ti["end_date"].isoformat(),
            ]
            for ti in tis
        ]
        with open(task_instances_path, "w") as handle:
            json.dump(seeded, handle)
    elapsed = time.monotonic() - started
    print(json.dumps({"airflow": airflow_version, "runs": len(runs), "task_instances": len(tis),
                      "seconds": round(elapsed, 3)}))  # fmt: skip


def _shifted(entry: list[str], shift: timedelta) -> list[str]:
    """A manifest entry with its start, end and commit times moved by `shift` (the logical date stays)."""
    moved = [(datetime.fromisoformat(v) + shift).isoformat() for v in entry[4:7]]
    return [*entry[:4], *moved, *entry[7:]]


def _live(entries: list[list[str]], task_ids: list[str], run_columns: set[str], ti_columns: set[str],
          log_path: str, create_session: Any, run_table: Any, ti_table: Any) -> None:  # fmt: skip
    """Commit each run when its commit time comes (see the module docstring); self-stopping."""
    order = sorted(range(len(entries)), key=lambda i: entries[i][6])
    due = [datetime.fromisoformat(entries[i][6]) for i in order]
    # Started late (a loaded machine imports Airflow slowly): shift the whole schedule rather than commit
    # a backlog at once. Later end dates only; the runs' identities (what is checked) stay.
    shift = max(timedelta(0), datetime.now(timezone.utc) - due[0]) if due else timedelta(0)
    if shift:
        due = [d + shift for d in due]
        entries = [_shifted(e, shift) for e in entries]
    position = 0
    with open(log_path, "a", buffering=1) as log:
        while position < len(order):
            began = time.monotonic()
            now = datetime.now(timezone.utc)
            stop = position
            while stop < len(order) and due[stop] <= now:
                stop += 1
            if stop > position:
                batch = order[position:stop]
                runs: list[dict[str, Any]] = []
                tis: list[dict[str, Any]] = []
                with create_session() as session:
                    committed = datetime.now(timezone.utc)
                    for i in batch:
                        run_row, ti_rows = _rows(entries[i], task_ids, run_columns, ti_columns, committed)
                        runs.append(run_row)
                        tis.extend(ti_rows)
                    session.execute(run_table.insert(), runs)
                    session.execute(ti_table.insert(), tis)
                # After the transaction: the moment the runs became visible to Airflow's API.
                log.write(
                    json.dumps({"t": time.time(), "idx": batch, "shift_s": shift.total_seconds()}) + "\n"
                )
                position = stop
            if position < len(order):
                # One transaction per BATCH_S at most (a commit per run would be 100s of fsyncs a second).
                wait = (due[position] - datetime.now(timezone.utc)).total_seconds()
                time.sleep(max(BATCH_S - (time.monotonic() - began), wait, 0.0))
        log.write(json.dumps({"t": time.time(), "done": True}) + "\n")


if __name__ == "__main__":
    if sys.argv[1] == "--live":
        main(sys.argv[2], live_log=sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[2] == "--task-instances":
        main(sys.argv[1], task_instances_path=sys.argv[3])
    else:
        main(sys.argv[1])
