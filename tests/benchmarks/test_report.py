"""The benchmark report's pure parts, without Airflow: keeping what a partial run did not re-run, the live
case's per-tick analysis, and reading airpeer's event-log check from a tick's log line."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from benchmarks.manifest import build_live_manifest
from benchmarks.report import event_log_checks, merge_kept
from benchmarks.run import analyze_live, combine_results

OLD = """# Benchmarks

Command: `make bench`. Run from 2026-11-30T11:28:12+00:00 to 2026-11-30T11:59:49+00:00. Raw figures...

## Targets (airpeer)

| case | target | measured (airpeer vs dagster-airlift) | verdict |
|---|---|---|---|
| load, metadata only (Airflow 2.11.2, N=1000) | no slower | 1.31 s vs 2.43 s | met |
| sensor (Airflow 2.11.2, N=1000, K=1000) | no tick over 10 s | longest tick 0.45 s | met |
| every case, every airpeer sensor run | 0 lost, 0 doubled | 0 lost over 50 runs | met |

## Airflow 2.11.2, N=1000 DAGs: side by side

Airflow started in 4.61 s.

#### Load, N=1000 DAGs, DAG metadata only

| load table |

#### Sensor, N=1000 DAGs, K=1000

| old sensor table |

## Airflow 3.3.2, N=100 DAGs: airpeer

#### Sensor, N=100 DAGs, K=1000

| old 3.3 table |
"""

NEW = """# Benchmarks

Command: `make bench BENCH_ARGS=--cases sensors --only 2:1000`. Run from 2026-12-02T02:10:00+00:00 to ...

## Targets (airpeer)

| case | target | measured (airpeer vs dagster-airlift) | verdict |
|---|---|---|---|
| sensor (Airflow 2.11.2, N=1000, K=1000) | no tick over 10 s | longest tick 0.40 s | met |
| every case, every airpeer sensor run | 0 lost, 0 doubled | 0 lost over 6 runs | met |

## Airflow 2.11.2, N=1000 DAGs: side by side

Airflow started in 5.00 s.

#### Sensor, N=1000 DAGs, K=1000

| new sensor table |
"""


def test_a_partial_run_keeps_what_it_did_not_re_run_marked_with_its_run() -> None:
    merged = merge_kept(NEW, OLD)
    mark = "*Not re-run: from the run of 2026-11-30 11:28 UTC (`make bench`).*"
    assert "| new sensor table |" in merged and "| old sensor table |" not in merged
    # The load section stays in its place (before the sensor), marked; the other plan is kept whole, once.
    assert merged.index("#### Load, N=1000") < merged.index("#### Sensor, N=1000 DAGs, K=1000")
    assert merged.count(mark) == 2
    assert merged.index("## Airflow 3.3.2, N=100") > merged.index("| new sensor table |")
    assert "| old 3.3 table |" in merged
    # Target rows: the re-run one is new, the load row is kept with its date, the exactly-once row is new only.
    assert "longest tick 0.40 s" in merged and "longest tick 0.45 s" not in merged
    assert "| 1.31 s vs 2.43 s | met (run of 2026-11-30 11:28 UTC) |" in merged
    assert merged.count("every case, every airpeer sensor run") == 1
    # Merging again keeps the marks as they are (a kept part keeps the date of the run that measured it).
    again = merge_kept(NEW.replace("2026-12-02T02:10", "2026-12-02T03:10"), merged)
    assert again.count(mark) == 2 and "(run of 2026-12-02" not in again.split("1.31 s vs 2.43 s")[1][:40]


def test_live_analysis_counts_each_tick_and_finds_stalls(tmp_path: Path) -> None:
    start = datetime(2026, 12, 2, 2, 0, tzinfo=timezone.utc)
    manifest = build_live_manifest(
        ["a", "b"], 4, duration=timedelta(seconds=4), start=start, late_share=0.0, late_max=timedelta(0)
    )
    t0 = start.timestamp()
    commits = tmp_path / "commits.jsonl"
    commits.write_text(
        "\n".join(
            json.dumps(line)
            for line in [{"t": t0, "idx": [0, 1]}, {"t": t0 + 2, "idx": [2, 3]}, {"t": t0 + 3, "done": True}]
        )
    )
    runs = manifest.runs

    def ident(i: int) -> list[object]:
        return ["mat" if runs[i].state == "success" else "check", runs[i].dag_id, runs[i].run_id, False]

    tick = {"requests": 1, "endpoints": {}, "wall_s": 0.1, "events": 0, "watermark": t0 - 60}
    raw = {
        "interval_s": 2.0,
        "finished": True,
        "ticks": [
            {**tick, "start": t0 + 1, "end": t0 + 1.1, "identities": [ident(0), ident(1)], "events": 2},
            {**tick, "start": t0 + 3, "end": t0 + 3.1, "identities": []},  # runs 2 and 3 wait: a stall
            {**tick, "start": t0 + 5, "end": t0 + 5.1, "identities": [ident(2), ident(3), ident(3)]},
        ],
    }
    live = analyze_live(raw, manifest, commits)
    assert [r["delivered"] for r in live["rows"]] == [2, 0, 2]
    assert [r["backlog"] for r in live["rows"]] == [0, 2, 0]
    assert live["stalled_ticks"] == [2]
    assert live["check"]["doubled"] == 1 and live["check"]["lost"] == 0
    assert live["ticks_to_catch_up_after_seeding"] == 2


def test_the_event_log_check_is_read_from_the_tick_log_line() -> None:
    line = (
        "airpeer: 5 runs ended (5 succeeded, 0 failed) -> 5 events, 0 check runs; 1 pages in 0.05 s; caught up; "
        "watermark 2026-12-02T01:38:48+00:00; event log check: 40 records in 0.013 s, 0 events already stored"
    )
    e2e = {"tick_logs": [[line], ["airpeer: 0 runs ended"]]}
    assert event_log_checks(e2e) == [(0.013, 40)]


def test_runs_of_different_plans_combine_into_one_report() -> None:
    def run(command: str, started: str, finished: str, stacks: list[tuple[int, int]]) -> dict[str, object]:
        return {"command": command, "started": started, "finished": finished, "airpeer_code": {"commit": "abc"},
                "stacks": [{"major": major, "dags": dags} for major, dags in stacks]}  # fmt: skip

    combined = combine_results(
        [
            run("b", "2026-12-02T01:51:00+00:00", "2026-12-02T02:40:00+00:00", [(3, 1000)]),
            run(
                "a", "2026-12-02T01:52:00+00:00", "2026-12-02T02:50:00+00:00", [(2, 100), (2, 1000), (3, 100)]
            ),
        ]
    )
    assert [(s["major"], s["dags"]) for s in combined["stacks"]] == [(2, 100), (2, 1000), (3, 100), (3, 1000)]
    assert combined["command"] == "b ; a"
    assert (combined["started"], combined["finished"]) == (
        "2026-12-02T01:51:00+00:00",
        "2026-12-02T02:50:00+00:00",
    )
    assert "at the same time" in combined["note"]


def test_a_later_run_of_the_same_plan_replaces_the_parts_it_measured() -> None:
    earlier = {
        "command": "a",
        "started": "1",
        "finished": "2",
        "airpeer_code": {"commit": "abc"},
        "stacks": [{"major": 3, "dags": 1000, "sensors": [{"label": "K=1000"}], "live": {"ticks": 1}}],
    }
    later = {"command": "b", "started": "3", "finished": "4", "airpeer_code": {"commit": "abc"},
             "stacks": [{"major": 3, "dags": 1000, "sensors": [], "live": {"ticks": 2}}]}  # fmt: skip
    (stack,) = combine_results([earlier, later])["stacks"]
    assert stack["live"] == {"ticks": 2} and stack["sensors"] == [{"label": "K=1000"}]


def test_task_materializations_are_checked_against_the_seeded_task_instances() -> None:
    from benchmarks.manifest import build_manifest
    from benchmarks.run import check_task_events, task_request_split

    manifest = build_manifest(["d1", "d2"], 20, ties=False)
    failed = {run.run_id for run in manifest.runs if run.state == "failed"}
    seeded = [
        [
            run.dag_id,
            run.run_id,
            task,
            -1,
            "failed" if run.run_id in failed and task == "load" else "success",
            "t",
        ]
        for run in manifest.runs
        for task in ("extract", "transform", "load")
    ]
    good = [["task", dag, run, task, True] for dag, run, task, _, state, _ in seeded if state == "success"]
    lost_one, doubled_one = good[1:], [*good, good[0]]
    wrong = [*good, ["task", "d1", manifest.runs[0].run_id, "nope", False]]
    checks = [
        ["taskcheck", dag, run, task, False] for dag, run, task, _, state, _ in seeded if state == "failed"
    ]
    airpeer = check_task_events([["mat", "d1", "r", None], *good, *checks], seeded, manifest, "airpeer")
    assert (airpeer["expected"], airpeer["lost"], airpeer["doubled"], airpeer["unexpected"]) == (58, 0, 0, 0)
    # airflow_task_status checks are counted apart, not as materializations.
    assert (airpeer["failing_task_checks"], airpeer["failing_task_checks_on_failed_tasks"]) == (2, 2)
    assert check_task_events(lost_one, seeded, manifest, "airpeer")["lost"] == 1
    assert check_task_events(doubled_one, seeded, manifest, "airpeer")["doubled"] == 1
    bad = check_task_events(wrong, seeded, manifest, "airpeer")
    assert (bad["unexpected"], bad["metadata_wrong"]) == (1, 1)
    # dagster-airlift reads successful runs only: the successful tasks of failed runs are not expected of it.
    in_successful = [e for e in good if e[2] not in failed]
    airlift = check_task_events(in_successful, seeded, manifest, "airlift")
    assert (airlift["expected"], airlift["not_read_by_design"], airlift["lost"]) == (54, 4, 0)
    ticks = [
        {"requests": 5, "endpoints": {"POST /api/v1/dags/~/dagRuns/list": 2, "POST /api/v1/dags/~/dagRuns/~/taskInstances/list": 3}},
        {"requests": 1, "endpoints": {"POST /api/v1/dags/~/dagRuns/list": 1}},
    ]  # fmt: skip
    assert task_request_split(ticks) == {
        "task_instance_requests": 3,
        "tick_task_instance_requests": [3, 0],
        "tick_other_requests": [2, 1],
    }


def test_a_later_run_replaces_the_observe_parts_it_measured() -> None:
    def run(command: str, parts: dict[str, object]) -> dict[str, object]:
        return {"command": command, "started": command, "finished": command, "airpeer_code": {"commit": "abc"},
                "stacks": [{"major": 2, "dags": 1000, "sensors": [], **parts}]}  # fmt: skip

    earlier = run(
        "1", {"loads": {"metadata": 1}, "mapped_loads": {"airpeer": 1}, "mapped_sensor": {"label": "a"}}
    )
    later = run("2", {"mapped_sensor": {"label": "b"}})
    (stack,) = combine_results([earlier, later])["stacks"]
    assert stack["mapped_sensor"] == {"label": "b"}
    assert stack["mapped_loads"] == {"airpeer": 1} and stack["loads"] == {"metadata": 1}


def test_a_run_of_the_observe_cases_only_keeps_the_exactly_once_row_before_it() -> None:
    new = NEW.replace(
        "| every case, every airpeer sensor run | 0 lost, 0 doubled | 0 lost over 6 runs | met |",
        "| every case with task mappings, every airpeer sensor run | 0 lost | 0 lost over 3 runs | met |",
    )
    merged = merge_kept(new, OLD)
    assert (
        "| every case, every airpeer sensor run | 0 lost, 0 doubled | 0 lost over 50 runs | met (run of"
        in merged
    )
    assert "| every case with task mappings, every airpeer sensor run |" in merged
