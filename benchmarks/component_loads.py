"""AirflowInstanceComponent at N DAGs: a run worker's load from state and a code-server reload (issue 12).

    .venv/bin/python -m benchmarks.component_loads --major 3 --dags 1000

Writes N benchmark DAG files (benchmarks/dagfiles.py), starts that Airflow on 127.0.0.1, and measures, in one
process after the imports, each `--repeats` times (the median is reported):

* code-server reload: what a code server does when the location is reloaded with the state refreshed
  (`refresh_if_dev`, `LEGACY_CODE_SERVER_SNAPSHOTS`, or `dg utils refresh-defs-state` then a load):
  `write_state_to_path` (the snapshot fetched from Airflow) then `build_defs_from_state`;
* run worker load: `build_defs_from_state` from the stored state alone, as a run worker (or a code server
  without refresh) loads the location.

Requests are counted by a transport around httpx's own, so every request, login included, is seen. The figures
go to WORK/component_loads.json and, between the markers below, into the report page (`--output`), which
benchmarks/report.py keeps when it rewrites the page.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import httpx

from dagster_airpeer import AirflowInstance, AirflowInstanceComponent
from devtools.airflow_stack import AirflowStack

from .dagfiles import write_dag_files
from .report import marked_section_markers, write_marked_section

ROOT = Path(__file__).resolve().parent.parent
START, END = marked_section_markers("component-loads")


class _Counting(httpx.BaseTransport):
    """httpx's transport, counting each request it sends by method and path."""

    def __init__(self, counts: Counter[str]) -> None:
        self.inner = httpx.HTTPTransport()
        self.counts = counts

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.counts[f"{request.method} {request.url.path}"] += 1
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class _CountedComponent(AirflowInstanceComponent):
    """The component, its Airflow client sending through `_Counting` (the only difference)."""

    counts: Counter[str] = Counter()

    def build_airflow_instance(self, webserver_url: str | None = None) -> AirflowInstance:
        return AirflowInstance(
            auth_backend=self.auth.build_backend(webserver_url),
            name=self.name,
            timeout=self.timeout_seconds,
            max_retries=self.max_retries,
            transport=_Counting(type(self).counts),
        )


def _component(stack: AirflowStack, snapshot_dir: Path) -> _CountedComponent:
    component = _CountedComponent.resolve_from_yaml(
        f"""
name: bench
auth:
  type: basic
  webserver_url: {stack.url}
  username: {stack.username}
  password: {stack.password}
snapshot_dir: {snapshot_dir}
"""
    )
    assert isinstance(component, _CountedComponent)
    return component


def _measure(label: str, repeats: int, body: Any, counts: Counter[str], check: Any = None) -> dict[str, Any]:
    seconds: list[float] = []
    requests: list[int] = []
    endpoints: Counter[str] = Counter()
    for _ in range(repeats):
        counts.clear()
        start = time.perf_counter()
        defs = body()
        seconds.append(time.perf_counter() - start)
        requests.append(sum(counts.values()))
        endpoints = Counter(counts)
        if check is not None:
            check(defs)
    print(f"component_loads: {label}: {statistics.median(seconds):.2f} s, {requests} requests", flush=True)
    return {
        "seconds": seconds,
        "median_s": statistics.median(seconds),
        "requests": requests,
        "endpoints": dict(endpoints),
    }


def run(major: int, dags: int, repeats: int, work: Path) -> dict[str, Any]:
    """Start Airflow with `dags` DAG files and measure both loads; return the figures."""
    os.environ.pop("DAGSTER_IS_DEV_CLI", None)  # a run worker reads the state, it does not refresh it
    dag_ids = write_dag_files(work / "dags", dags)
    stack = AirflowStack(major=major, home=work / "home", dags_folder=work / "dags")
    started = datetime.now(timezone.utc)
    stack.start()
    try:
        stack.wait_for_dags(dag_ids, timeout=1800)
        component = _component(stack, work / "snapshots")
        state = work / "state" / "bench.json"
        context: Any = None  # build_defs_from_state does not read the load context
        counts = _CountedComponent.counts
        expected = {dg.AssetKey(["bench", "dag", d]) for d in dag_ids}

        def check(defs: dg.Definitions) -> None:
            assert expected <= defs.resolve_asset_graph().get_all_asset_keys()

        def reload() -> dg.Definitions:
            component.write_state_to_path(state)
            return component.build_defs_from_state(context, state)

        figures = {
            "code_server_reload": _measure("code-server reload", repeats, reload, counts, check),
            "run_worker_load": _measure(
                "run worker load from state",
                repeats,
                lambda: component.build_defs_from_state(context, state),
                counts,
                check,
            ),
            "state_bytes": state.stat().st_size,
        }
    finally:
        stack.stop()
    return {
        "major": major,
        "airflow": f"Airflow {stack.version_label}",
        "dags": dags,
        "repeats": repeats,
        "started": started.isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load": os.getloadavg()},
        **figures,
    }


def render(results: list[dict[str, Any]]) -> str:
    """The report section (between the markers) for the runs in `results`."""
    lines = [
        START,
        "## AirflowInstanceComponent: run worker load and code-server reload",
        "",
        "`python -m benchmarks.component_loads` (one process, after the imports; median of the repeats). A run "
        "worker builds the definitions from the component's defs state alone; a code-server reload refreshes the "
        "state (the snapshot fetched from Airflow, one login included) and then builds from it.",
        "",
        "| Airflow | DAGs | case | requests | seconds (median) | runs |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for res in results:
        for key, label in (
            ("run_worker_load", "run worker load from state"),
            ("code_server_reload", "code-server reload (state refreshed)"),
        ):
            case = res[key]
            requests = ", ".join(str(r) for r in sorted(set(case["requests"])))
            seconds = ", ".join(f"{s:.2f}" for s in case["seconds"])
            lines.append(
                f"| {res['airflow']} | {res['dags']} | {label} | {requests} | {case['median_s']:.2f} | {seconds} |"
            )
    for res in results:
        endpoints = ", ".join(f"{k}: {v}" for k, v in sorted(res["code_server_reload"]["endpoints"].items()))
        lines += [
            "",
            f"{res['airflow']}, N={res['dags']}: a reload's requests: {endpoints}. State size "
            f"{res['state_bytes'] / 1024:.0f} KiB. Run {res['started']}, load average at the end "
            f"{', '.join(f'{x:.2f}' for x in res['machine']['load'])}.",
        ]
    lines.append(END)
    return "\n".join(lines)


def write_section(path: Path, results: list[dict[str, Any]]) -> None:
    """Put the section into the page at `path`, replacing the one there (before the soak block if new)."""
    write_marked_section(path, render(results))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.component_loads", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--major", type=int, choices=(2, 3), action="append", help="Airflow 3 (3.3) or 2 (2.11)"
    )
    parser.add_argument("--dags", type=int, default=1000, help="DAG files (default 1000)")
    parser.add_argument("--repeats", type=int, default=3, help="loads per case (default 3)")
    parser.add_argument("--work-dir", type=Path, default=ROOT / ".work" / "bench-component")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md", help="report page to update")
    args = parser.parse_args(argv)
    results = []
    for major in args.major or [3]:
        results.append(run(major, args.dags, args.repeats, args.work_dir / f"af{major}"))
    args.work_dir.mkdir(parents=True, exist_ok=True)
    (args.work_dir / "component_loads.json").write_text(json.dumps(results, indent=2, default=str))
    write_section(args.output, results)
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
