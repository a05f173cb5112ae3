"""Dagster events for one Airflow run."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import dagster as dg

from dagster_airpeer import RUN_STATUS_CHECK_NAME, DagRun
from dagster_airpeer.events import CONF_DISPLAY_LIMIT, events_for_run

KEY = dg.AssetKey(["inst", "dag", "d"])
END = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)


def _run(state: str, **kwargs: object) -> DagRun:
    return DagRun(
        dag_id="d",
        run_id="manual__1",
        state=state,
        end_date=END,
        start_date=END - timedelta(minutes=2),
        **kwargs,
    )  # type: ignore[arg-type]


def test_success_is_exactly_one_materialization() -> None:
    events = events_for_run(_run("success", run_type="manual"), KEY, run_url="http://af/run")
    assert [type(e) for e in events] == [dg.AssetMaterialization]
    md = events[0].metadata
    assert md["airflow/run_id"].value == "manual__1"
    assert md["airflow/duration_seconds"].value == 120.0
    assert md["airflow/run_url"].value == "http://af/run"


def test_a_success_after_a_recorded_failure_also_passes_the_check() -> None:
    # The sensor passes status_changed only for a recovery; a DAG's first success is one event (#13.20).
    events = events_for_run(_run("success"), KEY, run_url="u", status_changed=True)
    assert [type(e) for e in events] == [dg.AssetMaterialization, dg.AssetCheckEvaluation]
    check = events[1]
    assert isinstance(check, dg.AssetCheckEvaluation)
    assert check.passed and check.check_name == RUN_STATUS_CHECK_NAME


def test_failure_is_a_failing_check_and_never_a_materialization() -> None:
    events = events_for_run(_run("failed"), KEY, run_url="u")
    assert [type(e) for e in events] == [dg.AssetCheckEvaluation]
    check = events[0]
    assert isinstance(check, dg.AssetCheckEvaluation)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR


def test_odd_runs_are_described_not_dropped() -> None:
    huge = {"blob": "x" * 10_000}
    run = DagRun(
        dag_id="d",
        run_id="r",
        state="success",
        end_date=END,
        start_date=END + timedelta(seconds=5),
        conf=huge,
    )
    events = events_for_run(run, KEY, run_url="u")
    md = events[0].metadata
    assert md["airflow/duration_seconds"].value == -5.0
    assert (
        "truncated" in str(md["airflow/conf"].value)
        and len(str(md["airflow/conf"].value)) < CONF_DISPLAY_LIMIT + 100
    )
    no_dates = DagRun(dag_id="d", run_id="r2", state="success", end_date=END)
    assert "airflow/start_date" not in events_for_run(no_dates, KEY, run_url="u")[0].metadata
