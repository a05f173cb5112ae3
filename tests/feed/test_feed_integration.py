"""The feed's counts of the late-commit window against a real Airflow 2.11 and 3.3.

Runs are inserted straight into Airflow's database with end dates minutes in the past, after the feed read
that part of the window: to the REST API that is exactly a late commit. A run is deleted, and a real run
is cleared and runs again. Each completion must come out of the feed exactly once, and an idle tick over
a window of many pages costs a few requests (counts), not a page per run read again.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from dagster_airpeer import AirflowBasicAuthBackend, AirflowInstance
from dagster_airpeer.airflow.models import DagRun
from dagster_airpeer.feed import CompletionFeed, FeedState, PollResult
from reliability.harness import seed_finished_runs, spaced_runs

pytestmark = pytest.mark.integration

PAGE = 25
LATE = timedelta(minutes=5)
FRESH = timedelta(seconds=10)


def _drain(feed: CompletionFeed, state: FeedState) -> tuple[list[DagRun], FeedState, list[PollResult]]:
    out: list[DagRun] = []
    results: list[PollResult] = []
    for _ in range(50):
        result = feed.poll(FeedState.from_json(state.to_json()))
        results.append(result)
        out.extend(result.completions)
        state = result.state
        if result.caught_up:
            return out, state, results
    raise AssertionError("the feed never caught up")


def _mine(runs: list[DagRun], prefix: str) -> Counter[tuple[str, str, datetime | None]]:
    return Counter((r.dag_id, r.run_id, r.end_date) for r in runs if r.run_id.startswith(prefix))


def test_late_commits_deleted_and_cleared_runs_in_the_counted_window_exactly_once(
    airflow: Any, tmp_path: Path
) -> None:
    prefix = f"cnt_{uuid.uuid4().hex[:8]}"
    instance = AirflowInstance(
        auth_backend=AirflowBasicAuthBackend(airflow.url, airflow.username, airflow.password),
        name="counts",
        page_size=PAGE,
    )
    feed = CompletionFeed(
        instance, late_commit_window=LATE, full_reread_window=FRESH, page_size=PAGE, time_budget=30
    )
    with instance:
        # Airflow's clock, which the window is measured on (HTTP Date of its answer).
        now = instance.list_finished_runs(end_date_gte=datetime.now(timezone.utc), limit=1).server_time
        assert now is not None
        # 300 runs (12 pages) that ended between 3.5 and 1 minutes ago: inside the window, past the recent part.
        seeded = spaced_runs(
            "airpeer_ok",
            f"{prefix}_a",
            300,
            end_last=now - timedelta(minutes=1),
            spacing=timedelta(seconds=0.5),
        )
        seed_finished_runs(airflow, seeded, tmp_path)
        runs, state, _ = _drain(feed, FeedState.initial(now, timedelta(minutes=10)))
        first = _mine(runs, prefix)
        assert len(first) == 300 and set(first.values()) == {1}

        # Idle: the settled part of the window is counted, not read again (12 pages before).
        _, state, _ = _drain(feed, state)
        idle, state, results = _drain(feed, state)
        assert not _mine(idle, prefix)
        assert results[-1].requests <= 6, results[-1].requests

        # A run deleted in the counted part, then (next tick) late commits there: found by their count.
        victim = seeded[150]
        with airflow.client() as http:
            response = http.delete(f"/dags/airpeer_ok/dagRuns/{victim['run_id']}")
            assert response.status_code == 204, response.text
        gone, state, _ = _drain(feed, state)
        assert not _mine(gone, prefix)
        late_end = datetime.fromisoformat(victim["end"]) + timedelta(milliseconds=1)
        late = spaced_runs(
            "airpeer_ok", f"{prefix}_late", 3, end_last=late_end, spacing=timedelta(seconds=20)
        )
        seed_finished_runs(airflow, late, tmp_path)
        found, state, _ = _drain(feed, state)
        assert _mine(found, f"{prefix}_late") == Counter(
            ("airpeer_ok", r["run_id"], datetime.fromisoformat(r["end"])) for r in late
        )

        # A real run, cleared after it was delivered: it runs again and ends again, a new completion.
        run_id = f"{prefix}_real"
        airflow.trigger_dag_run("airpeer_ok", run_id=run_id)
        assert airflow.wait_for_dag_run("airpeer_ok", run_id, timeout=180) == "success"
        delivered, state, _ = _drain(feed, state)
        assert len(_mine(delivered, run_id)) == 1
        with airflow.client() as http:
            response = http.post(f"/dags/airpeer_ok/dagRuns/{run_id}/clear", json={"dry_run": False})
            assert response.status_code == 200, response.text
        assert airflow.wait_for_dag_run("airpeer_ok", run_id, timeout=180) == "success"
        again, state, _ = _drain(feed, state)
        assert len(_mine(again, run_id)) == 1
        assert _mine(delivered, run_id) != _mine(again, run_id)  # a new end date: a new completion

        # Nothing more comes out.
        rest, _, _ = _drain(feed, state)
        assert not _mine(rest, prefix)
