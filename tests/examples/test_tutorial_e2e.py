"""The tutorial end to end, on real processes: the demo's Airflow 3.3 and `dagster dev` peered by airpeer.

One test walks the tutorial in order, because each step builds on the state the previous one left:

1. a successful Airflow run (triggered through Airflow's REST API) shows up in Dagster as a materialization
   recorded by the running airpeer sensor, followed by a passing user check (run by the sensor's own run
   request);
2. with the raw CSV taken away the run fails: Dagster shows a failing `airflow_run_status` (severity ERROR),
   no materialization, and the user check (executed as from the UI) fails because customers.csv is gone;
   an empty customers.csv makes it fail with severity WARN;
3. the command `make clean` runs empties both sides (and they stay empty);
4. Ctrl-C stops the demo with no process and no port left behind.
"""

from __future__ import annotations

import subprocess
import time
import urllib.parse

import pytest
from tutorial_helpers import (
    ASSET_KEY,
    DAG_ID,
    DEFS_FILE,
    LOCATION,
    PYTHON,
    RUN_STATUS_CHECK,
    SENSOR,
    SENSOR_INTERVAL_SECONDS,
    USER_CHECK,
    TutorialStack,
    ports_free,
    wait_for,
)

from devtools.airflow_stack import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.airflow3, pytest.mark.slow]


def _succeeded_run(stack: TutorialStack) -> None:
    checks_before = stack.user_check_run_ids()
    run_id = stack.trigger_dag()
    assert stack.wait_for_dag_run(run_id) == "success", stack.log_tail()
    assert stack.customers_csv.is_file()

    materialization = stack.wait_for_materialization(run_id)
    # Recorded by the sensor itself (no Dagster run), with airpeer's description of the Airflow run.
    assert materialization.dagster_run_id == ""
    assert materialization.metadata["airflow/dag_id"] == "rebuild_customers_list"
    assert materialization.metadata["airflow/run_state"] == "success"
    assert materialization.metadata["airflow/run_url"].endswith(urllib.parse.quote(run_id, safe=""))
    assert "airflow/end_date" in materialization.metadata

    user_check = stack.wait_for_new_user_check(checks_before)
    assert user_check.passed is True, user_check
    assert user_check.metadata["row_count"] == 20

    with stack.dagster() as dagster:
        locations = dagster.locations()
        assert locations[0].sensors[SENSOR] == "RUNNING"
        # The check ran in the Dagster run the sensor requested after recording the materialization.
        requested = {run for tick in dagster.sensor_ticks(LOCATION, SENSOR) for run in tick.dagster_run_ids}
    assert user_check.dagster_run_id in requested


def _failed_run(stack: TutorialStack) -> None:
    stack.raw_csv.rename(stack.raw_csv.with_name("raw_customers.csv.away"))
    try:
        run_id = stack.trigger_dag()
        assert stack.wait_for_dag_run(run_id) == "failed", stack.log_tail()
    finally:
        stack.raw_csv.with_name("raw_customers.csv.away").rename(stack.raw_csv)

    status = stack.wait_for_run_status_check(run_id)
    assert status.passed is False
    assert status.severity == "ERROR"
    assert status.metadata["airflow/run_state"] == "failed"
    with stack.dagster() as dagster:
        assert not [m for m in dagster.materializations(ASSET_KEY) if m.airflow_run_id == run_id]

    # The failed rebuild removed yesterday's export: the user check, run as from the UI, sees it missing.
    assert not stack.customers_csv.exists()
    missing = stack.run_user_check()
    assert missing.passed is False
    assert missing.severity == "ERROR"
    assert missing.description == "customers.csv is missing"

    stack.customers_csv.write_text("customer_id,full_name,email\n")
    empty = stack.run_user_check()
    assert empty.passed is False
    assert empty.severity == "WARN"
    assert empty.metadata["row_count"] == 0


def _clean(stack: TutorialStack) -> None:
    # What `make clean` runs (mk/demo.mk), pointed at this stack.
    result = subprocess.run(
        [str(PYTHON), "-m", "dagster_airpeer", "clean", "--defs", str(DEFS_FILE), "--dag", DAG_ID, "--yes"],
        env=stack.env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Credentials never appear in what the command prints.
    assert "admin:admin" not in result.stdout + result.stderr

    def empty() -> bool:
        with stack.dagster() as dagster:
            return (
                not stack.airflow_run_ids()
                and not dagster.materializations(ASSET_KEY)
                and not dagster.check_executions(ASSET_KEY, RUN_STATUS_CHECK)
                and not dagster.check_executions(ASSET_KEY, USER_CHECK)
            )

    assert empty(), result.stdout + result.stderr
    # Still empty after a few sensor ticks: the sensor keeps its cursor and re-records nothing, and the
    # demo's Airflow starts no scheduled run to replace the deleted ones.
    first_tick = time.monotonic()
    wait_for("two sensor intervals", lambda: time.monotonic() - first_tick > 3 * SENSOR_INTERVAL_SECONDS, 60)
    assert empty()
    with stack.dagster() as dagster:
        assert dagster.locations()[0].sensors[SENSOR] == "RUNNING"


def _stop(stack: TutorialStack) -> None:
    pids_before = stack.descendants()
    assert len(pids_before) > 5  # the demo, 3 Airflow processes, dagster dev and its children
    status = stack.stop()
    assert status == 0, stack.log_tail()
    assert any("stopped; no process left and ports free" in line for line in stack.output), stack.log_tail()
    wait_for("every process of the demo to be gone", lambda: not stack.descendants(), 30)
    still_alive = [pid for pid in pids_before if _alive(pid)]
    assert not still_alive, still_alive
    assert ports_free(stack.airflow_port, stack.dagster_port)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.timeout(1200)
def test_tutorial_end_to_end(tutorial_stack: TutorialStack) -> None:
    _succeeded_run(tutorial_stack)
    _failed_run(tutorial_stack)
    _clean(tutorial_stack)
    _stop(tutorial_stack)
