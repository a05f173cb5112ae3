"""What the proxy adds to a task's duration, launch to Airflow success, over the same work in Airflow (issue 11).

    .venv/bin/python -m benchmarks.proxy_overhead --major 3 --runs 5

Starts one Airflow (127.0.0.1) with one DAG of one task (benchmarks/proxy_overhead_dag.py) and a real
`dagster dev` (127.0.0.1) loading its peering (benchmarks/proxy_overhead_defs.py), whose mapped asset does the
same small work. The task runs natively `--runs` times, then its proxied state is flipped (the YAML rewritten,
the DAG file touched, waited on until Airflow lists the proxy operator) and it runs `--runs` times proxied. Per
run, from Airflow's REST API: the task instance's `end_date - start_date` and the DAG run's. The median, the
spread (min-max) and the difference of the medians go between the markers below in the report page, which
benchmarks/report.py keeps when it rewrites the page. Everything started is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dagster_airpeer.in_airflow.naming import PROXIED_OPERATOR_SUFFIX
from devtools.airflow_stack import AirflowStack, free_port
from devtools.dagster_dev import dagster_dev, wait_for

from .report import marked_section_markers, write_marked_section

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
START, END = marked_section_markers("proxy-overhead")
DAG_ID, TASK_ID, INSTANCE = "airpeer_bench_proxy", "work", "bench"
TIMEOUT = 300.0


def _state(proxied: bool) -> str:
    return f"tasks:\n  - id: {TASK_ID}\n    proxied: {str(proxied).lower()}\n"


def _seconds(item: dict[str, Any]) -> float:
    start = datetime.fromisoformat(item["start_date"])
    end = datetime.fromisoformat(item["end_date"])
    return (end - start).total_seconds()


def _set_proxied(stack: AirflowStack, state_dir: Path, proxied: bool) -> None:
    (state_dir / f"{DAG_ID}.yaml").write_text(_state(proxied))
    dag_file = stack.dags_folder / "proxy_overhead_dag.py"
    stamp = time.time()
    os.utime(dag_file, (stamp, stamp))  # a newer mtime: Airflow parses the file again at once

    def shown() -> bool:
        with stack.client() as http:
            answer = http.get(f"/dags/{DAG_ID}/tasks")
        if answer.status_code != 200:
            return False
        (task,) = [t for t in answer.json()["tasks"] if t["task_id"] == TASK_ID]
        return bool(task["class_ref"]["class_name"].endswith(PROXIED_OPERATOR_SUFFIX) == proxied)

    wait_for(shown, f"Airflow to list task {TASK_ID} as {'proxied' if proxied else 'native'}", TIMEOUT)


def _one_run(stack: AirflowStack, proxied: bool) -> dict[str, float]:
    run_id = f"bench_{uuid.uuid4().hex[:8]}"
    stack.trigger_dag_run(DAG_ID, run_id=run_id)
    state = stack.wait_for_dag_run(DAG_ID, run_id, timeout=TIMEOUT)
    with stack.client() as http:
        run = http.get(f"/dags/{DAG_ID}/dagRuns/{run_id}").json()
        ti = http.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{TASK_ID}").json()
    if state != "success" or ti["operator"].endswith(PROXIED_OPERATOR_SUFFIX) != proxied:
        raise RuntimeError(f"run {run_id}: {state}, operator {ti['operator']} (proxied expected: {proxied})")
    return {"task_s": _seconds(ti), "run_s": _seconds(run)}


def _summary(values: list[float]) -> dict[str, Any]:
    return {"values": values, "median": statistics.median(values), "min": min(values), "max": max(values)}


def run(major: int, runs: int, warmup: int, work: Path) -> dict[str, Any]:
    """Start Airflow and `dagster dev`, run the task natively then proxied; return the figures."""
    shutil.rmtree(work, ignore_errors=True)
    dags, state_dir = work / "dags", work / "proxied_state"
    dags.mkdir(parents=True)
    state_dir.mkdir()
    shutil.copy(HERE / "proxy_overhead_dag.py", dags / "proxy_overhead_dag.py")
    (state_dir / f"{DAG_ID}.yaml").write_text(_state(False))
    dagster_port = free_port()
    dagster_url = f"http://127.0.0.1:{dagster_port}"
    stack = AirflowStack(
        major=major,
        home=work / "airflow_home",
        dags_folder=dags,
        extra_env={
            "PYTHONPATH": str(ROOT / "src"),  # Airflow 2.11's venv has no airpeer
            "AIRPEER_DAGSTER_URL": dagster_url,
            "AIRPEER_AIRFLOW_INSTANCE": INSTANCE,
            "AIRPEER_BENCH_PROXIED_STATE": str(state_dir),
        },
    )
    started = datetime.now(timezone.utc)
    figures: dict[str, Any] = {}
    defs = shutil.copy(HERE / "proxy_overhead_defs.py", work / "proxy_overhead_defs.py")
    dagster_env = {
        "AIRPEER_BENCH_AIRFLOW_URL": stack.url,
        "AIRPEER_BENCH_AIRFLOW_USER": stack.username,
        "AIRPEER_BENCH_AIRFLOW_PASSWORD": stack.password,
    }
    try:
        stack.start()
        stack.wait_for_dags([DAG_ID])
        with dagster_dev(work, Path(defs), dagster_env, port=dagster_port, timeout=TIMEOUT):
            # Native, proxied, proxied, native: a drift of the machine over the run (load, a growing database)
            # weighs on both sides alike instead of on whichever ran last.
            measured: dict[bool, list[dict[str, float]]] = {False: [], True: []}
            first_half = (runs + 1) // 2
            for proxied, count in (
                (False, first_half),
                (True, first_half),
                (True, runs - first_half),
                (False, runs - first_half),
            ):
                if count == 0:
                    continue
                _set_proxied(stack, state_dir, proxied)
                if not measured[proxied]:
                    for _ in range(warmup):  # not counted: the first run pays for cold imports and caches
                        _one_run(stack, proxied)
                measured[proxied] += [_one_run(stack, proxied) for _ in range(count)]
        for proxied, label in ((False, "native"), (True, "proxied")):
            figures[label] = {k: _summary([m[k] for m in measured[proxied]]) for k in ("task_s", "run_s")}
            print(f"proxy_overhead: {label}: {json.dumps(figures[label])}", flush=True)
    finally:
        stack.stop()
    return {
        "major": major,
        "airflow": f"Airflow {stack.version_label}",
        "runs": runs,
        "warmup": warmup,
        "started": started.isoformat(timespec="seconds"),
        "load": os.getloadavg(),
        **figures,
    }


def _cell(case: dict[str, Any]) -> str:
    return f"{case['median']:.2f} ({case['min']:.2f}-{case['max']:.2f})"


def render(results: list[dict[str, Any]], command: str) -> str:
    """The report section (between the markers) for the runs in `results`."""
    lines = [
        START,
        "## Proxy overhead: a task's duration proxied to Dagster vs run in Airflow (issue 11)",
        "",
        f"`{command}`. One DAG with one task doing the same small work in Airflow (native) and, proxied, in its "
        "mapped Dagster asset under a real `dagster dev` (daemon dequeuing every second). Durations from "
        "Airflow's REST API: the task instance's and the DAG run's `end_date - start_date`; seconds, median "
        "(min-max) of the runs, after untimed warm-up runs; in the order native, proxied, proxied, native.",
        "",
        "| Airflow | runs | task native | task proxied | task overhead | run native | run proxied | run overhead |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for res in results:
        native, proxied = res["native"], res["proxied"]
        task_d = proxied["task_s"]["median"] - native["task_s"]["median"]
        run_d = proxied["run_s"]["median"] - native["run_s"]["median"]
        lines.append(
            f"| {res['airflow']} | {res['runs']} | {_cell(native['task_s'])} | {_cell(proxied['task_s'])} | "
            f"{task_d:+.2f} | {_cell(native['run_s'])} | {_cell(proxied['run_s'])} | {run_d:+.2f} |"
        )
    for res in results:
        lines += [
            "",
            f"{res['airflow']}: run {res['started']}, load average at the end "
            f"{', '.join(f'{x:.2f}' for x in res['load'])}.",
        ]
    lines.append(END)
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """Put the section into the page at `path`, replacing the one there (before the soak block if new)."""
    write_marked_section(path, section)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.proxy_overhead", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--major", type=int, choices=(2, 3), action="append", help="Airflow 3 (3.3) or 2 (2.11)"
    )
    parser.add_argument("--runs", type=int, default=5, help="timed runs each way (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs each way first (default 1)")
    parser.add_argument("--work-dir", type=Path, default=ROOT / ".work" / "bench-proxy")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md", help="report page to update")
    args = parser.parse_args(argv)
    majors = args.major or [3]
    results = [run(major, args.runs, args.warmup, args.work_dir / f"af{major}") for major in majors]
    (args.work_dir / "proxy_overhead.json").write_text(json.dumps(results, indent=2, default=str))
    command = "python -m benchmarks.proxy_overhead " + " ".join(
        [*(f"--major {m}" for m in majors), f"--runs {args.runs}"]
    )
    section = render(results, command)
    write_section(args.output, section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
