"""The benchmark harness, run once end to end at tiny size so that `make bench` cannot rot.

Runs ``python -m benchmarks --tiny`` exactly as ``make bench-tiny`` does: a real Airflow 2.11 with airpeer and
dagster-airlift side by side, then a real Airflow 3.3 with airpeer, 5 DAGs and 30 seeded runs, a live case
(300 runs committed as they end over 12 s while the sensor ticks) and the observe cases (every task mapped to
an asset: the load, and the sensor's task materializations checked against the seeded task instances).
Asserts counts only (requests, events, lost and doubled runs), never a time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.report import event_log_checks

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
AIRLIFT_PYTHON = ROOT / ".venvs" / "airlift" / "bin" / "python"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    if not AIRLIFT_PYTHON.exists():
        pytest.fail(
            f"{AIRLIFT_PYTHON} is missing: run `make bench-env` (make test does it) to install dagster-airlift"
        )
    work = tmp_path_factory.mktemp("bench-tiny")
    report = work / "BENCHMARKS.md"
    # Popen rather than run(timeout=...): on a timeout the harness gets SIGTERM and stops its Airflow itself,
    # where run() would SIGKILL it and leave Airflow running.
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--tiny",
            "--work-dir",
            str(work),
            "--output",
            str(report),
            "--command",
            "pytest tests/benchmarks/test_bench_tiny.py",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        try:
            output, _ = proc.communicate(timeout=1100)
        except subprocess.TimeoutExpired:
            proc.terminate()
            output, _ = proc.communicate(timeout=120)
            pytest.fail(f"the tiny benchmark did not finish in 1100 s:\n{output[-4000:]}")
    assert proc.returncode == 0, f"the tiny benchmark failed:\n{output[-6000:]}"
    return json.loads((work / "results.json").read_text()), report.read_text()


def _stack(results: dict[str, Any], major: int) -> dict[str, Any]:
    stack = next(s for s in results["stacks"] if s["major"] == major)
    assert "error" not in stack, stack.get("error")
    return dict(stack)


def test_report_is_written_with_the_command(tiny_run: tuple[dict[str, Any], str]) -> None:
    results, report = tiny_run
    assert "pytest tests/benchmarks/test_bench_tiny.py" in report
    assert "## Latency floor of the server" in report
    assert "airpeer and dagster-airlift side by side" in report
    assert [s["major"] for s in results["stacks"]] == [2, 3]


def test_airpeer_reports_every_seeded_run_exactly_once(tiny_run: tuple[dict[str, Any], str]) -> None:
    results, _ = tiny_run
    checked = 0
    for stack in results["stacks"]:
        for case in stack["sensors"]:
            for run in case["results"]["airpeer"]["runs"]:
                check = run["check"]
                assert run["caught_up"]
                assert (
                    check["lost"],
                    check["doubled"],
                    check["unexpected"],
                    check["wrong_check_outcome"],
                ) == (0, 0, 0, 0)
                succeeded = check["seeded_runs"] - check["seeded_failed"]
                # One materialization per success, one failing check per failure, a passing check at most
                # once per success (when the DAG recovers from a failure).
                assert check["materializations"] == succeeded
                assert check["failing_checks"] == check["seeded_failed"]
                assert check["passing_checks"] <= succeeded
                checked += 1
    assert checked == 3  # Airflow 2.11: spread + ties; Airflow 3.3: spread


def test_airlift_adapter_measures_the_same_cases(tiny_run: tuple[dict[str, Any], str]) -> None:
    results, _ = tiny_run
    stack = _stack(results, 2)
    assert stack["library_versions"]["airlift"]["dagster-airlift"] == "0.29.27"
    for case in stack["sensors"]:
        (run,) = case["results"]["airlift"]["runs"]
        check = run["check"]
        # dagster-airlift reports successful runs only, each once.
        assert check["lost"] == 0 and check["doubled"] == 0
        assert check["runs_reported"] == check["seeded_runs"] - check["seeded_failed"]
    sources = stack["loads"]["source_first"]["airlift"]
    assert sources["assets_with_source"] == 5
    assert sources["endpoints"][0]["GET /api/v1/dagSources/{id}"] == 5


def test_request_counts_are_pages_not_objects(tiny_run: tuple[dict[str, Any], str]) -> None:
    results, _ = tiny_run
    for major in (2, 3):
        stack = _stack(results, major)
        v = f"v{major - 1}"
        meta = stack["loads"]["metadata"]["airpeer"]
        for endpoints in meta["endpoints"]:
            assert endpoints[f"GET /api/{v}/dags"] == 1  # 5 DAGs: one page
            assert not [e for e in endpoints if "dagSources" in e or "/tasks" in e]
        # A reload with unchanged DAG files fetches no source.
        for endpoints in stack["loads"]["source_reload"]["airpeer"]["endpoints"]:
            assert not [e for e in endpoints if "dagSources" in e]
        assert stack["loads"]["source_first"]["airpeer"]["assets_with_source"] == 5
        first_case = stack["sensors"][0]["results"]["airpeer"]
        # 30 runs fit in one page; the caught-up tick reads one page.
        for tick in first_case["idle"]:
            assert tick["requests"] == 1
            assert tick["events"] == 0


def test_where_the_time_goes_is_profiled(tiny_run: tuple[dict[str, Any], str]) -> None:
    results, report = tiny_run
    profile = _stack(results, 2)["sensors"][0]["results"]["airpeer"]["profile"]
    assert profile["by_area"] and profile["top_functions"]
    assert "## Where airpeer's sensor time goes" in report


def test_end_to_end_runs_store_every_event_as_the_daemon(tiny_run: tuple[dict[str, Any], str]) -> None:
    results, report = tiny_run
    for stack in results["stacks"]:
        for case in stack["sensors"]:
            for library, result in case["results"].items():
                e2e = result["e2e"]
                check = e2e["check"]
                assert (check["lost"], check["doubled"], check["unexpected"]) == (0, 0, 0), library
                # Every event the sensor emitted went through report_runless_asset_event (tiny: within budget).
                assert e2e["stored"] == e2e["events"] == check["events"] and e2e["unstored"] == 0, library
                assert e2e["stored"] > 0
                if library == "airpeer":
                    # airpeer reads Dagster's event log once per tick that emits (issue 13, item 17); the tick
                    # after the first reads back what the first one stored.
                    checks = event_log_checks(e2e)
                    emitting = sum(1 for n in e2e["tick_events"] if n)
                    assert len(checks) == emitting
                    assert checks[0][1] == 0
    assert "end to end, one run: evaluation + storing as Dagster's daemon does" in report
    assert "events stored per run reported" in report


def test_live_case_delivers_every_committed_run_once(tiny_run: tuple[dict[str, Any], str]) -> None:
    results, report = tiny_run
    live = _stack(results, 3)["live"]
    check = live["check"]
    assert live["committed"] == live["case"]["runs"] == check["runs_reported"]
    assert (check["lost"], check["doubled"], check["unexpected"], check["wrong_check_outcome"]) == (
        0,
        0,
        0,
        0,
    )
    assert live["late_runs"] > 0  # some runs were committed after later ones: the late-commit path ran
    assert live["stalled_ticks"] == []
    assert live["ticks_to_catch_up_after_seeding"] is not None
    assert live["finished"]
    assert sum(row["delivered"] for row in live["rows"]) == live["committed"]
    assert all(row["requests"] >= 1 for row in live["rows"])
    assert "#### Live: 300 completions" in report


def test_observe_cases_report_every_successful_task_once(tiny_run: tuple[dict[str, Any], str]) -> None:
    results, report = tiny_run
    for stack in results["stacks"]:
        for library, load in stack["mapped_loads"].items():
            (endpoints,) = load["endpoints"]
            # 5 DAGs of 3 tasks, each task mapped to one asset; one task list per mapped DAG.
            assert (load["assets"], load["task_assets"]) == (20, 15), library
            assert sum(n for e, n in endpoints.items() if e.endswith("/tasks")) == 5, library
        case = stack["mapped_sensor"]
        for library, result in case["results"].items():
            (run,) = result["runs"]
            tasks, runs = run["task_check"], run["check"]
            assert run["caught_up"], library
            assert (tasks["lost"], tasks["doubled"], tasks["unexpected"], tasks["metadata_wrong"]) == (
                0,
                0,
                0,
                0,
            ), library
            assert tasks["materializations"] == tasks["expected"] > 0, library
            assert (runs["lost"], runs["doubled"]) == (0, 0), library
        airpeer = case["results"]["airpeer"]["runs"][0]
        # airpeer: every successful task instance of every run that ended, failed runs included; its task-instance
        # requests follow pages of task instances (90 here), not runs (30: one request per run would be 27+).
        assert airpeer["task_check"]["expected"] == airpeer["task_check"]["successful_task_instances"]
        assert airpeer["task_instance_requests"] < 10
        # Its airflow_task_status check fails on each task that failed for good (the last task of a failed run).
        checks = airpeer["task_check"]
        assert checks["failing_task_checks"] == checks["failing_task_checks_on_failed_tasks"]
        assert checks["failing_task_checks"] == checks["seeded_failed_task_instances"] > 0
    airlift = _stack(results, 2)["mapped_sensor"]["results"]["airlift"]["runs"][0]
    # dagster-airlift 0.29.27 asks for the task instances of each successful run, one request each.
    assert airlift["task_instance_requests"] == airlift["check"]["runs_reported"]
    assert "#### Sensor with task mappings, N=5 DAGs" in report
    assert "#### Load with task mappings, N=5 DAGs" in report
