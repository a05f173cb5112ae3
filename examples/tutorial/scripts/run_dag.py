"""`make run-dag`: trigger ``rebuild_customers_list`` in Airflow, follow it, then see it arrive in Dagster.

The tutorial's equivalent of ``airflow dags backfill ...``, done through airpeer's Airflow client (the same
REST calls the peering uses), so it works against any Airflow the demo started, on any port:

1. trigger a manual run and print each task's state as it changes;
2. once the run has ended, wait (unless ``--no-dagster``) until the Dagster webserver shows what the airpeer
   sensor recorded for it: a materialization of the DAG's asset (or a failed ``airflow_run_status`` check),
   and for a successful run the result of the user check ``customers_csv_has_rows``.

Settings come from the environment, as ``make`` sets them: AIRFLOW_URL, AIRFLOW_USERNAME, AIRFLOW_PASSWORD,
DAGSTER_URL. Exit status: 0 when the run succeeded (and Dagster recorded it), 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import httpx

from dagster_airpeer import (
    RUN_STATUS_CHECK_NAME,
    AirflowBasicAuthBackend,
    AirflowError,
    AirflowInstance,
    DagRun,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dagster_status import CheckExecution, DagsterStatus

DAG_ID = "rebuild_customers_list"
INSTANCE_NAME = "airflow_instance_one"
ASSET_KEY = (INSTANCE_NAME, "dag", DAG_ID)
USER_CHECK = "customers_csv_has_rows"
_POLL_SECONDS = 1.0


class Clock:
    """Elapsed time since the script started, as a prefix for progress lines."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def say(self, message: str) -> None:
        """Print one progress line at once (make and pipes buffer otherwise)."""
        print(f"[{time.monotonic() - self.started:6.1f}s] {message}", flush=True)


def follow_airflow_run(instance: AirflowInstance, run: DagRun, clock: Clock, timeout: float) -> DagRun:
    """Poll the run and its task instances until the run ends; print every change of state."""
    seen: dict[str, str | None] = {}
    last_run_state = ""
    deadline = time.monotonic() + timeout
    while True:
        run = instance.get_dag_run(DAG_ID, run.run_id)
        if run.state != last_run_state:
            clock.say(f"run {run.state}")
            last_run_state = run.state
        for task in instance.list_task_instances(DAG_ID, run.run_id):
            if seen.get(task.task_id, "") != task.state:
                seen[task.task_id] = task.state
                clock.say(f"  {task.task_id}: {task.state or 'not scheduled yet'}")
        if run.is_finished:
            return run
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run.run_id} still {run.state} after {timeout:g} s")
        time.sleep(_POLL_SECONDS)


def describe_check(execution: CheckExecution) -> str:
    """One line for a check execution: its outcome, severity and row count when there is one."""
    if execution.passed is None:
        return f"{execution.status.lower()} (no result yet)"
    outcome = "passed" if execution.passed else f"failed ({execution.severity})"
    details = [f"{k}={v}" for k, v in execution.metadata.items() if k == "row_count"]
    if execution.description and not execution.passed:
        details.append(execution.description)
    return outcome + (f": {', '.join(details)}" if details else "")


def follow_dagster(
    dagster_url: str, run: DagRun, checks_before: set[str], clock: Clock, timeout: float
) -> bool:
    """Wait until Dagster shows the sensor's record of ``run`` (and the user check for a success)."""
    deadline = time.monotonic() + timeout
    clock.say(f"waiting for Dagster ({dagster_url}) to record the run; the airpeer sensor polls Airflow ...")
    recorded = False
    last_pending = ""
    with DagsterStatus(dagster_url) as dagster:
        # Stage 1 of the tutorial (peer.py) has no user check to wait for.
        has_user_check = USER_CHECK in dagster.check_names(ASSET_KEY)
        while time.monotonic() < deadline:
            if not recorded and run.succeeded:
                # A successful run is recorded as a materialization carrying the Airflow run's id.
                if any(m.airflow_run_id == run.run_id for m in dagster.materializations(ASSET_KEY, limit=20)):
                    recorded = True
                    clock.say(f"Dagster recorded a materialization of {'/'.join(ASSET_KEY)}")
                    if not has_user_check:
                        return True
            elif not recorded:
                # A failed run is recorded as a failing evaluation of the built-in run-status check.
                statuses = dagster.check_executions(ASSET_KEY, RUN_STATUS_CHECK_NAME, limit=20)
                mine = [s for s in statuses if s.airflow_run_id == run.run_id and s.passed is not None]
                if mine:
                    clock.say(
                        f"Dagster recorded the failure: check {RUN_STATUS_CHECK_NAME} {describe_check(mine[0])}"
                    )
                    # The sensor runs the user's checks after successful runs only.
                    return True
            if recorded:
                new = [
                    e
                    for e in dagster.check_executions(ASSET_KEY, USER_CHECK, limit=20)
                    if e.dagster_run_id not in checks_before
                ]
                if new and new[0].passed is not None:
                    clock.say(f"  check {USER_CHECK}: {describe_check(new[0])}")
                    return bool(new[0].passed)
                if new and new[0].status != last_pending:
                    last_pending = new[0].status
                    clock.say(f"  check {USER_CHECK}: {last_pending.lower()} ...")
            time.sleep(2)
    clock.say(f"Dagster did not show the run within {timeout:g} s: is the sensor running? Open {dagster_url}")
    return False


def main(argv: list[str] | None = None) -> int:
    """Trigger, follow, report."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the Airflow run")
    parser.add_argument("--dagster-timeout", type=float, default=180, help="seconds to wait for Dagster")
    parser.add_argument("--no-dagster", action="store_true", help="do not wait for Dagster to record the run")
    args = parser.parse_args(argv)

    airflow_url = os.environ.get("AIRFLOW_URL") or "http://127.0.0.1:8080"
    dagster_url = os.environ.get("DAGSTER_URL") or "http://127.0.0.1:3000"
    instance = AirflowInstance(
        auth_backend=AirflowBasicAuthBackend(
            webserver_url=airflow_url,
            username=os.environ.get("AIRFLOW_USERNAME") or "admin",
            password=os.environ.get("AIRFLOW_PASSWORD") or "admin",
        ),
        name=INSTANCE_NAME,
    )
    clock = Clock()
    checks_before: set[str] = set()
    if not args.no_dagster:
        try:
            with DagsterStatus(dagster_url) as dagster:
                checks_before = {e.dagster_run_id for e in dagster.check_executions(ASSET_KEY, USER_CHECK)}
        except (httpx.HTTPError, RuntimeError) as exc:
            print(
                f"warning: Dagster at {dagster_url} does not answer ({exc}); not waiting for it", flush=True
            )
            args.no_dagster = True
    with instance:
        try:
            run = instance.trigger_dag_run(DAG_ID)
        except AirflowError as exc:
            print(
                f"error: cannot trigger {DAG_ID} at {airflow_url}: {exc}\nIs `make demo` running?",
                file=sys.stderr,
            )
            return 1
        clock.say(f"triggered {DAG_ID}, run {run.run_id}")
        clock.say(f"  {instance.run_url(DAG_ID, run.run_id)}")
        run = follow_airflow_run(instance, run, clock, args.timeout)
    clock.say(f"Airflow run {run.run_id} ended: {run.state}")
    dagster_ok = True
    if not args.no_dagster:
        dagster_ok = follow_dagster(dagster_url, run, checks_before, clock, args.dagster_timeout)
        clock.say(f"see it in Dagster: {dagster_url}/assets/{'/'.join(ASSET_KEY)}")
    return 0 if run.succeeded and dagster_ok else 1


if __name__ == "__main__":
    sys.exit(main())
