"""The benchmark orchestrator: airpeer vs dagster-airlift against a real Airflow. ``python -m benchmarks``.

For every planned Airflow (2.11 for the side-by-side figures, dagster-airlift speaking only REST v1; 3.3 for
airpeer's own figures) it writes N DAG files, starts Airflow on 127.0.0.1, and runs the cases:

* loads: build the definitions (DAG metadata only; with DAG sources, first load and reloads);
* sensors: seed K finished runs through Airflow's ORM, then tick each library's sensor from the same start
  until it is caught up, checking every event against the seeded runs (lost, doubled);
* idle ticks once caught up, then the same sensor run end to end (each tick's events stored in a real SQLite
  DagsterInstance, as Dagster's daemon stores them), and a profile of airpeer's sensor;
* live (airpeer): runs committed into Airflow as they end, tens of thousands over minutes, while the sensor
  ticks at its own interval with its default settings: per tick what was delivered and how far behind it is;
* observe (issue 10): the definitions with an asset mapped to every task of every DAG, each library through
  its own ``assets_with_task_mappings`` (mapped loads), and the sensor over seeded runs and task instances,
  every task materialization checked against the seeded task instances (mapped sensors).

Results go to ``WORK/results.json`` and the report (BENCHMARKS.md) is rendered from it by
:mod:`benchmarks.report`. dagster-airlift gets a time cap per command and is reported as "did not finish"
when it hits it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from devtools.airflow_stack import AirflowStack

from . import latency
from .dagfiles import TASK_IDS, write_dag_files
from .driver import AdapterError, AdapterProcess, AdapterTimeout
from .manifest import Manifest, build_live_manifest, build_manifest

ROOT = Path(__file__).resolve().parent.parent
PYTHONS = {
    "airpeer": ROOT / ".venv" / "bin" / "python",
    "airlift": ROOT / ".venvs" / "airlift" / "bin" / "python",
}
LIBRARY_LABELS = {"airpeer": "airpeer", "airlift": "dagster-airlift"}
#: Margin before the first seeded end date where both sensors start (no other run ends in it).
START_MARGIN_S = 60.0


@dataclass(frozen=True)
class SensorCase:
    """K runs seeded over the plan's DAGs; ``ties``: every run ends at the same instant."""

    runs: int
    ties: bool = False
    idle_after: bool = False
    profile: bool = False
    airlift: bool = True

    @property
    def label(self) -> str:
        return f"K={self.runs}, {'one identical end time (ties)' if self.ties else 'spread over time'}"


@dataclass(frozen=True)
class LiveCase:
    """``runs`` completions committed into Airflow as they end over ``duration_s`` (airpeer, real time).

    A ``late_share`` of them is committed up to ``late_max_s`` after its end (inside the late-commit window).
    The sensor ticks at its default interval unless ``interval_s`` is given (the tiny run).
    """

    runs: int
    duration_s: float
    late_share: float = 0.01
    late_max_s: float = 120.0
    interval_s: int | None = None
    idle_ticks_after: int = 2

    @property
    def label(self) -> str:
        return f"{self.runs} completions in {self.duration_s / 60:g} minutes"


@dataclass(frozen=True)
class MappedSensorCase:
    """Observe: K runs seeded over the plan's DAGs, every task of every DAG mapped to one asset.

    ``airlift_cap_s``: dagster-airlift's time cap for this case (the run-wide cap when None).
    """

    runs: int
    airlift: bool = True
    airlift_cap_s: float | None = None

    @property
    def label(self) -> str:
        return f"K={self.runs}, {len(TASK_IDS)} mapped tasks per DAG"


@dataclass(frozen=True)
class StackPlan:
    """One Airflow with N DAG files and the cases run against it."""

    major: int
    dags: int
    libraries: tuple[str, ...]
    loads: bool = False
    latency: bool = False
    sensors: tuple[SensorCase, ...] = ()
    live: LiveCase | None = None
    #: Observe (issue 10): a load with every task mapped, and a sensor case with task materializations.
    mapped_load: bool = False
    mapped_sensor: MappedSensorCase | None = None


#: Parts of a plan `--cases` can select.
CASE_KINDS = ("loads", "sensors", "live", "mapped_loads", "mapped_sensors")


@dataclass(frozen=True)
class Settings:
    tiny: bool
    load_repeats: int
    airlift_load_repeats: int
    sensor_repeats: int
    idle_ticks: int
    latency_samples: int
    airlift_cap_s: float
    airpeer_cap_s: float
    #: Observe cases: builds per mapped load (airpeer, dagster-airlift), airpeer's sensor runs, idle ticks after.
    mapped_load_repeats: int = 3
    airlift_mapped_load_repeats: int = 1
    mapped_sensor_repeats: int = 3
    mapped_idle_ticks: int = 2
    #: Storing time allowed to one end-to-end run; past it the rest is extrapolated (see cmd_sensor).
    store_budget_s: float = 150.0
    plans: tuple[StackPlan, ...] = field(default_factory=tuple)
    cases: tuple[str, ...] = CASE_KINDS
    #: Where airpeer is imported from (the sources of --airpeer-commit); None: the checkout itself.
    airpeer_src: str | None = None
    #: --airpeer-after: once each plan's Airflow is ready, wait for a commit whose message contains this text
    #: (until the UTC time `airpeer_after_until`), then measure the HEAD of that moment.
    airpeer_after: str | None = None
    airpeer_after_until: str | None = None


BOTH = ("airpeer", "airlift")
FULL_PLANS = (
    StackPlan(
        2,
        100,
        BOTH,
        sensors=(SensorCase(1000), SensorCase(1000, ties=True)),
        mapped_sensor=MappedSensorCase(1000),
    ),
    StackPlan(
        2,
        1000,
        BOTH,
        loads=True,
        latency=True,
        sensors=(
            SensorCase(1000, idle_after=True),
            SensorCase(10_000, profile=True),
            SensorCase(10_000, ties=True, airlift=False),
        ),
        live=LiveCase(50_000, 300.0),
        mapped_load=True,
        # dagster-airlift reads the task instances of each run one request after the other: capped.
        mapped_sensor=MappedSensorCase(10_000, airlift_cap_s=300.0),
    ),
    StackPlan(3, 100, ("airpeer",), sensors=(SensorCase(1000), SensorCase(1000, ties=True))),
    StackPlan(
        3,
        1000,
        ("airpeer",),
        loads=True,
        latency=True,
        sensors=(
            SensorCase(1000, idle_after=True),
            SensorCase(10_000, profile=True),
            SensorCase(10_000, ties=True),
        ),
        live=LiveCase(50_000, 300.0),
        mapped_load=True,
        mapped_sensor=MappedSensorCase(10_000),
    ),
)
TINY_PLANS = (
    StackPlan(
        2,
        5,
        BOTH,
        loads=True,
        latency=True,
        sensors=(SensorCase(30, idle_after=True, profile=True), SensorCase(30, ties=True)),
        mapped_load=True,
        mapped_sensor=MappedSensorCase(30),
    ),
    StackPlan(
        3,
        5,
        ("airpeer",),
        loads=True,
        latency=True,
        sensors=(SensorCase(30, idle_after=True),),
        live=LiveCase(300, 12.0, late_share=0.02, late_max_s=4.0, interval_s=2, idle_ticks_after=1),
        mapped_load=True,
        mapped_sensor=MappedSensorCase(30),
    ),
)


def _env_for(major: int) -> dict[str, str]:
    """Benchmark settings of the Airflow processes (on top of devtools' test settings)."""
    # Files are parsed once at start; re-parsing 1000 files every few seconds would take a core of the
    # two away from both libraries. The re-parse case is measured explicitly (`airflow dags reserialize`).
    env = {
        "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "86400",
        "AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL": "86400",
    }
    if major == 2:
        env["AIRFLOW__WEBSERVER__WORKERS"] = "2"
        # Airflow 2 parses with a single process on SQLite (~1 s per file under load: 20 minutes for 1000
        # files). The scheduler is told a standalone processor parses (none runs), and the DAGs are
        # registered once with `airflow dags reserialize` instead (~25 s for 1000).
        env["AIRFLOW__SCHEDULER__STANDALONE_DAG_PROCESSOR"] = "True"
        # With a "standalone" processor the scheduler deactivates DAGs not re-parsed for 10 minutes.
        env["AIRFLOW__SCHEDULER__DAG_STALE_NOT_SEEN_DURATION"] = "8640000"
    else:
        env["AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL"] = "86400"
        env["AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL"] = "86400"
        env["AIRFLOW__API__WORKERS"] = "2"
    return env


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------------------------------- checking


def check_events(events: list[list[Any]], manifest: Manifest, library: str) -> dict[str, Any]:
    """Compare a sensor's events with the seeded runs: lost, doubled, unexpected, wrong check outcome.

    airpeer reports every run that ends: a successful run by one materialization (plus, when the DAG
    recovers from a failure, one passing `airflow_run_status` check), a failed run by one failing check.
    dagster-airlift reports successful runs only, by one materialization each.
    """
    mats: Counter[tuple[str, str]] = Counter()
    checks: Counter[tuple[str, str]] = Counter()
    passing = failing = wrong_outcome = 0
    succeeded, failed = manifest.succeeded, manifest.failed
    for kind, dag_id, run_id, passed in events:
        run = (dag_id, run_id)
        if kind == "mat":
            mats[run] += 1
            continue
        checks[run] += 1
        passing += bool(passed)
        failing += not passed
        if bool(passed) != (run in succeeded):
            wrong_outcome += 1
    must_check = failed if library == "airpeer" else set()
    may_check = succeeded | failed if library == "airpeer" else set()
    lost_runs = {r for r in succeeded if mats[r] == 0} | {r for r in must_check if checks[r] == 0}
    doubled_runs = {r for r, n in mats.items() if n > 1} | {r for r, n in checks.items() if n > 1}
    unexpected = (set(mats) - succeeded) | (set(checks) - may_check)
    return {
        "seeded_runs": len(manifest.runs),
        "seeded_failed": len(failed),
        "runs_reported": len(set(mats) | set(checks)),
        "failed_runs_reported": len(failed & (set(mats) | set(checks))),
        "materializations": sum(mats.values()),
        "passing_checks": passing,
        "failing_checks": failing,
        "lost": len(lost_runs),
        "doubled": len(doubled_runs),
        "unexpected": len(unexpected),
        "wrong_check_outcome": wrong_outcome,
        "events": len(events),
    }


def check_task_events(
    events: list[list[Any]], seeded_tis: list[list[Any]], manifest: Manifest, library: str
) -> dict[str, Any]:
    """Compare a sensor's task materializations with the seeded task instances: lost, doubled, unexpected.

    Every task of every DAG is mapped to one asset, so an (asset key, run id) pair is a (DAG, task, run): each
    successful task instance must give exactly one materialization of its task's asset. airpeer reports them
    in every run that ended; dagster-airlift reads the task instances of successful runs only, so for it the
    successful tasks of failed runs are counted apart ("not read by design"), not as lost.
    """
    expected = {
        (dag, run, task) for dag, run, task, _map_index, state, _end in seeded_tis if state == "success"
    }
    outside = set()
    if library != "airpeer":
        succeeded = manifest.succeeded
        outside = {ti for ti in expected if (ti[0], ti[1]) not in succeeded}
    must = expected - outside
    mats: Counter[tuple[str, str, str]] = Counter()
    metadata_wrong = passing = 0
    failing: set[tuple[str, str, str]] = set()
    for event in events:
        if event[0] == "taskcheck":
            _, dag_id, run_id, task_id, passed = event
            passing += bool(passed)
            if not passed:
                failing.add((dag_id, run_id, task_id))
            continue
        if event[0] != "task":
            continue
        _, dag_id, run_id, task_id, metadata_ok = event
        mats[(dag_id, run_id, task_id)] += 1
        metadata_wrong += metadata_ok is False
    failed_tis = {
        (dag, run, task) for dag, run, task, _map_index, state, _end in seeded_tis if state == "failed"
    }
    return {
        "seeded_task_instances": len(seeded_tis),
        "successful_task_instances": len(expected),
        "expected": len(must),
        "not_read_by_design": len(outside),
        "reported": len(set(mats)),
        "materializations": sum(mats.values()),
        "lost": len(must - set(mats)),
        "doubled": sum(1 for n in mats.values() if n > 1),
        "unexpected": len(set(mats) - expected),
        "metadata_wrong": metadata_wrong,
        # airpeer's airflow_task_status checks: one failing per task that failed for good, passing ones after.
        "seeded_failed_task_instances": len(failed_tis),
        "failing_task_checks": len(failing),
        "failing_task_checks_on_failed_tasks": len(failing & failed_tis),
        "passing_task_checks": passing,
    }


def task_request_split(ticks: list[dict[str, Any]]) -> dict[str, Any]:
    """Requests per tick for task instances (``taskInstances`` endpoints) and for everything else."""
    per_tick = [sum(n for e, n in t.get("endpoints", {}).items() if "taskInstances" in e) for t in ticks]
    return {
        "task_instance_requests": sum(per_tick),
        "tick_task_instance_requests": per_tick,
        "tick_other_requests": [t["requests"] - n for t, n in zip(ticks, per_tick, strict=True)],
    }


def summarize_ticks(ticks: list[dict[str, Any]]) -> dict[str, Any]:
    endpoints: Counter[str] = Counter()
    for tick in ticks:
        endpoints.update(tick.get("endpoints", {}))
    walls = [t["wall_s"] for t in ticks]
    return {
        "ticks": len(ticks),
        "total_s": sum(walls),
        "max_tick_s": max(walls) if walls else 0.0,
        "cpu_s": sum(t["cpu_s"] for t in ticks),
        "requests": sum(t["requests"] for t in ticks),
        "tick_requests": [t["requests"] for t in ticks],
        "endpoints": dict(endpoints),
        "events": sum(t["events"] for t in ticks),
        "tick_walls": walls,
        # End to end (runs with storing): the daemon's storing after each evaluation, and the sensor's log.
        "store_s": sum(t.get("store_s", 0.0) for t in ticks),
        "stored": sum(t.get("stored", 0) for t in ticks),
        "unstored": sum(t.get("unstored", 0) for t in ticks),
        "tick_store_s": [t.get("store_s", 0.0) for t in ticks],
        "tick_events": [t["events"] for t in ticks],
        "tick_logs": [t.get("log", []) for t in ticks],
    }


# ---------------------------------------------------------------------------------------------- the cases


class StackRun:
    """Runs one plan: its Airflow, its adapters, its cases; fills ``self.result``."""

    def __init__(self, plan: StackPlan, settings: Settings, work: Path) -> None:
        self.plan = plan
        self.settings = settings
        self.dir = work / f"airflow{plan.major}-n{plan.dags}"
        self.result: dict[str, Any] = {
            "major": plan.major,
            "dags": plan.dags,
            "libraries": list(plan.libraries),
            "settings": _env_for(plan.major),
            "loads": {},
            "sensors": [],
        }
        self.adapters: dict[str, AdapterProcess] = {}
        self.stack: AirflowStack | None = None

    def cap(self, library: str) -> float:
        return self.settings.airlift_cap_s if library == "airlift" else self.settings.airpeer_cap_s

    def run(self) -> dict[str, Any]:
        plan = self.plan
        if self.dir.exists():
            shutil.rmtree(self.dir)
        dags_folder = self.dir / "dags"
        self.dag_ids = write_dag_files(dags_folder, plan.dags)
        stack = AirflowStack(
            major=plan.major,
            home=self.dir / "home",
            dags_folder=dags_folder,
            dags_paused_at_creation=True,
            extra_env=_env_for(plan.major),
        )
        self.stack = stack
        say(f"Airflow {stack.version_label} with {plan.dags} DAG files: starting")
        started = time.monotonic()
        try:
            stack.start(timeout=300)
            self.result["startup_s"] = time.monotonic() - started
            if plan.major == 2:
                stack.cli("dags", "reserialize", timeout=1800)
            stack.wait_for_dags(self.dag_ids, timeout=900)
            self.result["dags_listed_s"] = time.monotonic() - started
            self.result["airflow_version"] = subprocess.run(
                [str(stack.python()), "-c", "import airflow; print(airflow.__version__)"],
                env=stack.env, capture_output=True, text=True, check=True,
            ).stdout.strip()  # fmt: skip
            say(f"Airflow {self.result['airflow_version']} ready, {plan.dags} DAGs listed after "
                f"{self.result['dags_listed_s']:.1f} s")  # fmt: skip
            # Adapters start on first use (self.adapter): with --airpeer-after, airpeer's waits for its commit
            # then, and dagster-airlift's parts of the observe cases run meanwhile.
            cases = self.settings.cases
            if plan.loads and "loads" in cases:
                self.run_loads()
            if "sensors" in cases:
                for index, case in enumerate(plan.sensors):
                    self.run_sensor_case(case, measure_latency=plan.latency and index == 0)
            if plan.live is not None and "live" in cases and "airpeer" in plan.libraries:
                self.run_live_case(plan.live)
            self.run_mapped()
        finally:
            for adapter in self.adapters.values():
                adapter.close()
            stack.stop()
            say(f"Airflow {stack.version_label} stopped")
        return self.result

    def adapter(self, library: str) -> AdapterProcess:
        """The library's adapter, started and initialised on first use (airpeer's after --airpeer-after's wait)."""
        if library in self.adapters:
            return self.adapters[library]
        stack = self.stack
        assert stack is not None
        if library == "airpeer" and self.settings.airpeer_after:
            self._wait_for_airpeer_commit()
        env = None
        if library == "airpeer" and self.settings.airpeer_src:
            # The sources of one commit, ahead of the editable install's /work/main/src on sys.path.
            env = {**os.environ, "PYTHONPATH": self.settings.airpeer_src}
        adapter = AdapterProcess(library, PYTHONS[library], self.dir / f"adapter-{library}.log", env=env)
        self.adapters[library] = adapter
        info = adapter.call("init", cap_s=300, url=stack.url, username=stack.username, major=self.plan.major,
                            password=stack.password)  # fmt: skip
        self.result.setdefault("library_versions", {})[library] = info["versions"]
        src = self.settings.airpeer_src
        if library == "airpeer" and src and not info["versions"].get("module", "").startswith(src):
            raise RuntimeError(f"airpeer was imported from {info['versions'].get('module')}, not {src}")
        return adapter

    def _wait_for_airpeer_commit(self) -> None:
        """Airflow is up (its start is long at N=1000): wait for the commit to measure, then take its sources.

        The newest commit whose message contains the text is measured (not HEAD: later commits of other work
        stay out), the same one for every plan of the run; HEAD if none came by the deadline.
        """
        text, until = self.settings.airpeer_after, self.settings.airpeer_after_until
        assert text is not None
        code = _RESOLVED.get(text)
        if code is None:
            deadline = datetime.fromisoformat(
                f"{datetime.now(timezone.utc).date()}T{until or '23:59'}:00+00:00"
            )
            while True:
                found = subprocess.run(["git", "log", "--format=%H", "-F", f"--grep={text}", "-1"], cwd=ROOT,
                                       capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
                if found or datetime.now(timezone.utc) >= deadline:
                    break
                say(f"waiting for a commit with {text!r} (until {until or '23:59'} UTC)")
                time.sleep(60)
            code = _airpeer_code(found or "HEAD", self.dir.parent)
            code["waited_for"] = text
            code["found"] = bool(found)
            _RESOLVED[text] = code
        self.settings = replace(self.settings, airpeer_src=code["src"])
        self.result["airpeer_code"] = code
        say(f"measuring airpeer at {code['commit']} ({code.get('subject', '')[:70]})"
            + ("" if code["found"] else f"; no commit with {text!r} by then"))  # fmt: skip

    # -- loads ----------------------------------------------------------------------------------------------

    def _load(self, library: str, repeats: int, **params: Any) -> dict[str, Any]:
        adapter = self.adapter(library)
        try:
            return dict(adapter.call("load", cap_s=self.cap(library), repeats=repeats, **params))
        except AdapterTimeout as exc:
            say(f"{library}: {exc}")
            return {"dnf": True, "cap_s": self.cap(library)}

    def run_loads(self) -> None:
        loads = self.result["loads"]
        s = self.settings
        say("load, DAG metadata only")
        loads["metadata"] = {}
        for lib in self.plan.libraries:
            repeats = s.load_repeats if lib == "airpeer" else s.airlift_load_repeats
            loads["metadata"][lib] = self._load(lib, repeats, show_dag_source=False)
        say("load with DAG sources: first loads")
        first: dict[str, Any] = {}
        reload: dict[str, Any] = {}
        for lib in self.plan.libraries:
            cache = str(self.dir / f"source-cache-{lib}")
            if lib == "airpeer":
                first[lib] = self._load(lib, s.load_repeats, show_dag_source=True, cache_dir=cache,
                                        fresh_cache_each=True)  # fmt: skip
                say("load with DAG sources: reloads (DAG files unchanged)")
                reload[lib] = self._load(lib, s.load_repeats, show_dag_source=True, cache_dir=cache)
            else:
                # dagster-airlift keeps nothing between loads: its reload is another full load.
                both = self._load(lib, 2, show_dag_source=True)
                if both.get("dnf"):
                    first[lib] = reload[lib] = both
                else:
                    first[lib] = _pick(both, 0)
                    reload[lib] = _pick(both, 1)
        loads["source_first"] = first
        loads["source_reload"] = reload
        assert self.stack is not None
        say("re-parsing every DAG file (`airflow dags reserialize`, contents unchanged)")
        started = time.monotonic()
        self.stack.cli("dags", "reserialize", timeout=1800)
        loads["reserialize_s"] = time.monotonic() - started
        if "airpeer" in self.plan.libraries:
            cache = str(self.dir / "source-cache-airpeer")
            after = self._load("airpeer", 1, show_dag_source=True, cache_dir=cache)
            loads["source_reload_after_reparse"] = {"airpeer": after}

    # -- sensors --------------------------------------------------------------------------------------------

    def seed(
        self, case: SensorCase | MappedSensorCase, task_instances: Path | None = None
    ) -> tuple[Manifest, dict[str, Any]]:
        """Seed the case's runs; ``task_instances``: also write the seeded task instances there (observe)."""
        assert self.stack is not None
        ties = isinstance(case, SensorCase) and case.ties
        manifest = build_manifest(self.dag_ids, case.runs, ties=ties)
        kind = "-mapped" if isinstance(case, MappedSensorCase) else "-ties" if ties else ""
        path = self.dir / f"manifest-k{case.runs}{kind}.json"
        manifest.write(path, self.dag_ids, TASK_IDS)
        extra = [] if task_instances is None else ["--task-instances", str(task_instances)]
        started = time.monotonic()
        done = subprocess.run(
            [str(self.stack.python()), str(Path(__file__).with_name("seed_airflow.py")), str(path), *extra],
            env=self.stack.env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"seeding failed:\n{done.stdout}\n{done.stderr}")
        report = json.loads(done.stdout.strip().splitlines()[-1])
        report["wall_s"] = time.monotonic() - started
        return manifest, report

    def run_sensor_case(self, case: SensorCase, measure_latency: bool) -> None:
        plan, s = self.plan, self.settings
        say(f"sensor, N={plan.dags}, {case.label}: seeding")
        manifest, seed_report = self.seed(case)
        entry: dict[str, Any] = {"case": asdict(case), "label": case.label, "seed": seed_report, "results": {},
                                 "loadavg_before": os.getloadavg()}  # fmt: skip
        if measure_latency:
            assert self.stack is not None
            say("latency floor of the server")
            self.result["latency"] = latency.measure(
                self.stack.url,
                plan.major,
                self.stack.username,
                self.stack.password,
                s.latency_samples,
                since=manifest.start.timestamp(),
            )
        history_from = manifest.start.timestamp() - START_MARGIN_S
        for library in plan.libraries:
            if library == "airlift" and not case.airlift:
                continue
            entry["results"][library] = self.run_sensor_library(library, case, manifest, history_from)
        self.result["sensors"].append(entry)

    def run_sensor_library(
        self, library: str, case: SensorCase, manifest: Manifest, history_from: float
    ) -> dict[str, Any]:
        s = self.settings
        adapter = self.adapter(library)
        repeats = s.sensor_repeats if library == "airpeer" else 1
        runs: list[dict[str, Any]] = []
        out: dict[str, Any] = {"runs": runs}
        # dagster-airlift runs once (minutes): that run is end to end, its events stored tick by tick, and its
        # evaluation figures are the ticks' own times. airpeer's timed runs evaluate only (medians of several);
        # one more run of it is end to end.
        end_to_end = library == "airlift"
        for attempt in range(repeats):
            say(f"  {library}: sensor run {attempt + 1}/{repeats}")
            try:
                raw = adapter.call("sensor", cap_s=self.cap(library), history_from=history_from,
                                   deadline_s=self.cap(library), store=end_to_end,
                                   store_budget_s=s.store_budget_s)  # fmt: skip
            except AdapterTimeout as exc:
                ticks = [p["tick"] for p in exc.progress if "tick" in p]
                summary = summarize_ticks(ticks)
                summary.update(dnf=True, cap_s=self.cap(library), caught_up=False)
                runs.append(summary)
                say(f"  {library}: did not finish in {self.cap(library):.0f} s "
                    f"({summary['events']} events in {summary['ticks']} ticks)")  # fmt: skip
                out["dnf"] = True
                if end_to_end:
                    out["e2e"] = summary
                return out
            summary = summarize_ticks(raw["ticks"])
            summary["caught_up"] = raw["caught_up"]
            summary["check"] = check_events(raw["events"], manifest, library)
            runs.append(summary)
            if end_to_end:
                out["e2e"] = summary
            say(f"  {library}: {summary['ticks']} ticks, {summary['total_s']:.2f} s, {summary['requests']} requests,"
                f" {summary['events']} events, lost {summary['check']['lost']}, doubled {summary['check']['doubled']}")  # fmt: skip
        # Ticks after the one that emitted nothing: a sensor that is really caught up reads O(1) pages here.
        idle_ticks = s.idle_ticks if case.idle_after else 2
        say(f"  {library}: {idle_ticks} idle ticks")
        try:
            out["idle"] = adapter.call("idle", cap_s=self.cap(library), ticks=idle_ticks)["ticks"]
        except AdapterTimeout:
            out["idle_dnf"] = True
        if not end_to_end:
            say(
                f"  {library}: sensor run end to end (events stored in a SQLite DagsterInstance, as the daemon)"
            )
            try:
                raw = adapter.call("sensor", cap_s=self.cap(library) + s.store_budget_s,
                                   history_from=history_from, deadline_s=self.cap(library), store=True,
                                   store_budget_s=s.store_budget_s)  # fmt: skip
                e2e = summarize_ticks(raw["ticks"])
                e2e["caught_up"] = raw["caught_up"]
                e2e["check"] = check_events(raw["events"], manifest, library)
                out["e2e"] = e2e
                say(f"  {library}: end to end {e2e['total_s']:.2f} s evaluation + {e2e['store_s']:.2f} s storing "
                    f"{e2e['stored']} events; lost {e2e['check']['lost']}, doubled {e2e['check']['doubled']}")  # fmt: skip
            except AdapterTimeout as exc:
                e2e = summarize_ticks([p["tick"] for p in exc.progress if "tick" in p])
                e2e.update(dnf=True, cap_s=self.cap(library), caught_up=False)
                out["e2e"] = e2e
        if case.profile and library == "airpeer":
            say(f"  {library}: profiled sensor run (pyinstrument)")
            profile_path = self.dir / f"profile-airpeer-n{self.plan.dags}-k{case.runs}.txt"
            raw = adapter.call("sensor", cap_s=self.cap(library), history_from=history_from,
                               deadline_s=self.cap(library), profile_path=str(profile_path))  # fmt: skip
            out["profile"] = {**(raw.get("profile") or {}), "text_path": str(profile_path),
                              "run": summarize_ticks(raw["ticks"])}  # fmt: skip
        return out

    # -- observe: task mappings ----------------------------------------------------------------------------

    def task_mappings(self) -> dict[str, list[str]]:
        """Every task of every DAG of the plan mapped to one asset (the adapters build the specs)."""
        return {"dag_ids": list(self.dag_ids), "task_ids": list(TASK_IDS)}

    def run_mapped(self) -> None:
        """The observe cases: the load with task mappings, then the sensor case with task materializations.

        dagster-airlift's parts run first: with --airpeer-after they need no airpeer commit, and run while
        airpeer's adapter waits for one. Both sensors read the same seeded runs and task instances.
        """
        plan, cases = self.plan, self.settings.cases
        load = plan.mapped_load and "mapped_loads" in cases
        case = plan.mapped_sensor if "mapped_sensors" in cases else None
        if not load and case is None:
            return
        libraries = [lib for lib in ("airlift", "airpeer") if lib in plan.libraries]
        if load:
            self.result["mapped_loads"] = {}
        entry: dict[str, Any] | None = None
        manifest: Manifest | None = None
        seeded_tis: list[list[Any]] = []
        if case is not None:
            say(f"observe: sensor with task mappings, N={plan.dags}, {case.label}: seeding")
            tis_path = self.dir / f"seeded-task-instances-k{case.runs}.json"
            manifest, seed_report = self.seed(case, task_instances=tis_path)
            seeded_tis = json.loads(tis_path.read_text())
            entry = {"case": asdict(case), "label": case.label, "seed": seed_report, "results": {},
                     "loadavg_before": os.getloadavg()}  # fmt: skip
            self.result["mapped_sensor"] = entry
        for library in libraries:
            if load:
                say(f"observe: load with task mappings, N={plan.dags}: {library}")
                s = self.settings
                repeats = s.mapped_load_repeats if library == "airpeer" else s.airlift_mapped_load_repeats
                result = self._load(
                    library, repeats, show_dag_source=False, task_mappings=self.task_mappings()
                )
                result["loadavg"] = os.getloadavg()
                self.result["mapped_loads"][library] = result
            if case is not None and entry is not None and manifest is not None:
                if library == "airlift" and not case.airlift:
                    continue
                entry["results"][library] = self.run_mapped_sensor(library, case, manifest, seeded_tis)
                entry["loadavg_after"] = os.getloadavg()

    def run_mapped_sensor(
        self, library: str, case: MappedSensorCase, manifest: Manifest, seeded_tis: list[list[Any]]
    ) -> dict[str, Any]:
        """Tick the library's sensor (task mappings on) until caught up; check runs and task materializations."""
        s = self.settings
        adapter = self.adapter(library)
        cap = (case.airlift_cap_s or s.airlift_cap_s) if library == "airlift" else s.airpeer_cap_s
        repeats = s.mapped_sensor_repeats if library == "airpeer" else 1
        history_from = manifest.start.timestamp() - START_MARGIN_S
        runs: list[dict[str, Any]] = []
        out: dict[str, Any] = {"runs": runs, "cap_s": cap}
        for attempt in range(repeats):
            say(f"  {library}: sensor run {attempt + 1}/{repeats} (task mappings)")
            try:
                raw = adapter.call("sensor", cap_s=cap, history_from=history_from, deadline_s=cap,
                                   task_mappings=self.task_mappings())  # fmt: skip
            except AdapterTimeout as exc:
                ticks = [p["tick"] for p in exc.progress if "tick" in p]
                summary = summarize_ticks(ticks)
                summary.update(task_request_split(ticks))
                summary.update(dnf=True, cap_s=cap, caught_up=False)
                runs.append(summary)
                out["dnf"] = True
                say(f"  {library}: did not finish in {cap:.0f} s ({summary['events']} events in "
                    f"{summary['ticks']} finished ticks)")  # fmt: skip
                return out
            summary = summarize_ticks(raw["ticks"])
            summary.update(task_request_split(raw["ticks"]))
            summary["caught_up"] = raw["caught_up"]
            run_events = [e for e in raw["events"] if e[0] not in ("task", "taskcheck")]
            summary["check"] = check_events(run_events, manifest, library)
            summary["task_check"] = check_task_events(raw["events"], seeded_tis, manifest, library)
            runs.append(summary)
            tc = summary["task_check"]
            say(f"  {library}: {summary['ticks']} ticks, {summary['total_s']:.2f} s, {summary['requests']} requests "
                f"({summary['task_instance_requests']} for task instances), {tc['materializations']} task "
                f"materializations, lost {tc['lost']}, doubled {tc['doubled']}, unexpected {tc['unexpected']}")  # fmt: skip
        say(f"  {library}: {s.mapped_idle_ticks} idle ticks")
        try:
            idle = adapter.call("idle", cap_s=cap, ticks=s.mapped_idle_ticks)["ticks"]
            out["idle"] = idle
        except AdapterTimeout:
            out["idle_dnf"] = True
        return out

    # -- live ---------------------------------------------------------------------------------------------

    def run_live_case(self, live: LiveCase) -> None:
        """Commit runs as they end while airpeer's sensor ticks at its interval; see :func:`analyze_live`."""
        assert self.stack is not None
        say(f"live, N={self.plan.dags}, {live.label}: seeding in real time while the sensor ticks")
        # The first runs end a few seconds from now: the seeder's interpreter and the sensor's load start first.
        start = datetime.now(timezone.utc) + timedelta(seconds=8)
        manifest = build_live_manifest(self.dag_ids, live.runs, duration=timedelta(seconds=live.duration_s),
                                       start=start, late_share=live.late_share,
                                       late_max=timedelta(seconds=live.late_max_s))  # fmt: skip
        path = self.dir / f"manifest-live-{live.runs}.json"
        manifest.write(path, self.dag_ids, TASK_IDS)
        commits = self.dir / f"live-commits-{live.runs}.jsonl"
        commits.unlink(missing_ok=True)
        # Started (and, with --airpeer-after, waited for) before the seeder: the runs are committed in real time.
        airpeer = self.adapter("airpeer")
        interval = live.interval_s or 30
        # At least a minute of slack past the last commit: a loaded machine seeds slower than planned, and a
        # tiny case (2 s ticks) would otherwise stop one tick short of the quiet ticks that end it.
        stop_after = live.duration_s + live.late_max_s + max(60.0, (4 + live.idle_ticks_after) * interval)
        loadavg = os.getloadavg()
        with (self.dir / "live-seeder.log").open("w") as seeder_log:
            seeder = subprocess.Popen(
                [str(self.stack.python()), str(Path(__file__).with_name("seed_airflow.py")), "--live", str(path),
                 str(commits)],
                env=self.stack.env, stdout=seeder_log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            try:
                raw = airpeer.call(
                    "live", cap_s=stop_after + 120, history_from=manifest.start.timestamp() - START_MARGIN_S,
                    expected_runs=live.runs, commits_path=str(commits), stop_after_s=stop_after,
                    idle_ticks_after=live.idle_ticks_after, sensor_interval_s=live.interval_s,
                )  # fmt: skip
            finally:
                try:
                    seeder.wait(timeout=live.duration_s + 60)
                except subprocess.TimeoutExpired:
                    seeder.terminate()
                    seeder.wait(timeout=30)
        if seeder.returncode != 0:
            raise RuntimeError(
                f"live seeding failed (exit {seeder.returncode}); see {self.dir / 'live-seeder.log'}"
            )
        entry = analyze_live(raw, manifest, commits)
        entry.update(
            case=asdict(live), label=live.label, loadavg_before=loadavg, loadavg_after=os.getloadavg()
        )
        self.result["live"] = entry
        say(f"  live: {entry['ticks']} ticks, {entry['check']['runs_reported']} / {live.runs} runs, lost "
            f"{entry['check']['lost']}, doubled {entry['check']['doubled']}, longest wait {entry['max_delay_s']:.1f} s")  # fmt: skip


def analyze_live(raw: dict[str, Any], manifest: Manifest, commits_path: Path) -> dict[str, Any]:
    """Per tick of a live case: what was committed, delivered, how late; and lost / doubled over the whole run."""
    committed_at: dict[tuple[str, str], float] = {}
    late_runs = 0
    for line in commits_path.read_text().splitlines():
        batch = json.loads(line)
        for index in batch.get("idx", []):
            run = manifest.runs[index]
            committed_at[(run.dag_id, run.run_id)] = batch["t"]
    for run in manifest.runs:
        if run.commit_at is not None and run.commit_at > run.end_date:
            late_runs += 1
    first_commit = min(committed_at.values(), default=0.0)
    delivered: set[tuple[str, str]] = set()
    identities: list[list[Any]] = []
    rows: list[dict[str, Any]] = []
    for number, tick in enumerate(raw["ticks"], 1):
        new_runs = []
        for ident in tick["identities"]:
            identities.append(ident)
            run = (ident[1], ident[2])
            if run not in delivered:
                delivered.add(run)
                new_runs.append(run)
        visible = [r for r, t in committed_at.items() if t <= tick["start"]]
        backlog = sum(1 for r in visible if r not in delivered)
        delays = [tick["end"] - committed_at[r] for r in new_runs if r in committed_at]
        rows.append({
            "tick": number,
            "at_s": tick["start"] - first_commit,
            "committed": len(visible),
            "delivered": len(new_runs),
            "events": tick["events"],
            "requests": tick["requests"],
            "endpoints": tick["endpoints"],
            "wall_s": tick["wall_s"],
            "watermark_lag_s": None if tick.get("watermark") is None else tick["end"] - tick["watermark"],
            "backlog": backlog,
            "max_delay_s": max(delays, default=None),
            "cursor_bytes": tick.get("cursor_bytes"),
            "log": tick.get("log", []),
        })  # fmt: skip
    seeding_end = max(committed_at.values(), default=first_commit)
    # A stall: a tick that delivers nothing while runs committed before it started are still waiting.
    stalled = [r["tick"] for r in rows if r["delivered"] == 0 and r["backlog"] > 0]
    after_end = [r for r in rows if r["at_s"] + first_commit > seeding_end]
    caught_up_tick = next((i for i, r in enumerate(after_end, 1) if r["backlog"] == 0), None)
    delays = [r["max_delay_s"] for r in rows if r["max_delay_s"] is not None]
    lags = [r["watermark_lag_s"] for r in rows if r["watermark_lag_s"] is not None]
    return {
        "rows": rows,
        "ticks": len(rows),
        "interval_s": raw["interval_s"],
        "finished": raw["finished"],
        "late_runs": late_runs,
        "seeding_s": seeding_end - first_commit,
        "committed": len(committed_at),
        "check": check_events(identities, manifest, "airpeer"),
        "requests": sum(r["requests"] for r in rows),
        "max_delay_s": max(delays, default=0.0),
        "max_watermark_lag_s": max(lags, default=None),
        "max_backlog": max((r["backlog"] for r in rows), default=0),
        "max_tick_s": max((r["wall_s"] for r in rows), default=0.0),
        "stalled_ticks": stalled,
        "ticks_to_catch_up_after_seeding": caught_up_tick,
    }


def _pick(load: dict[str, Any], index: int) -> dict[str, Any]:
    """One build out of a multi-build load result, as a one-build result."""
    picked = dict(load)
    for key in ("wall_s", "cpu_s", "requests", "endpoints"):
        if key in load and len(load[key]) > index:
            picked[key] = [load[key][index]]
    return picked


# ---------------------------------------------------------------------------------------------- main


def machine_info() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
    except (OSError, StopIteration):
        mem_kb = 0
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "loadavg_at_start": os.getloadavg(),
    }


def build_settings(args: argparse.Namespace) -> Settings:
    cases = CASE_KINDS if args.cases is None else tuple(c.strip() for c in args.cases.split(",") if c.strip())
    unknown = sorted(set(cases) - set(CASE_KINDS))
    if unknown:
        raise SystemExit(
            f"--cases: unknown {unknown}; expected a comma-separated subset of {','.join(CASE_KINDS)}"
        )
    if args.tiny:
        return Settings(
            tiny=True, load_repeats=2, airlift_load_repeats=1, sensor_repeats=1, idle_ticks=3,
            latency_samples=5, airlift_cap_s=args.airlift_cap or 180, airpeer_cap_s=180, store_budget_s=60.0,
            mapped_load_repeats=1, airlift_mapped_load_repeats=1, mapped_sensor_repeats=1, mapped_idle_ticks=1,
            plans=TINY_PLANS, cases=cases,
        )  # fmt: skip
    return Settings(
        tiny=False, load_repeats=5, airlift_load_repeats=3, sensor_repeats=5, idle_ticks=5,
        latency_samples=20, airlift_cap_s=args.airlift_cap or 600, airpeer_cap_s=900,
        plans=FULL_PLANS, cases=cases,
    )  # fmt: skip


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    # SIGTERM (timeout, pytest-timeout, CI) must stop Airflow and the adapters like Ctrl-C does.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tiny", action="store_true", help="tiny sizes (N=5, K=30): checks the harness in minutes"
    )
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md", help="the report to write")
    parser.add_argument(
        "--work-dir", type=Path, default=ROOT / ".work" / "bench", help="Airflow homes, logs, results"
    )
    parser.add_argument("--airlift-cap", type=float, default=None, help="seconds per dagster-airlift command")
    parser.add_argument(
        "--only", default=None, help="run only plans matching e.g. '2:1000' or '3:100,3:1000'"
    )
    parser.add_argument(
        "--cases",
        default=None,
        help=f"run only these parts of each plan, e.g. 'sensors,live' (of {','.join(CASE_KINDS)}; default all)",
    )
    parser.add_argument(
        "--airpeer-commit",
        default=None,
        help="measure airpeer as of this commit (its src/ from `git archive`), not the checkout's working tree",
    )
    parser.add_argument(
        "--airpeer-after",
        default=None,
        metavar="TEXT",
        help="start each plan's Airflow, then wait for a commit whose message contains TEXT and measure it",
    )
    parser.add_argument("--airpeer-after-until", default=None, metavar="HH:MM", help="UTC; stop waiting then")
    parser.add_argument(
        "--render",
        type=Path,
        nargs="+",
        default=None,
        help="only render OUTPUT from these results.json (several: runs of different plans, combined)",
    )
    parser.add_argument(
        "--command", default=None, help="the command recorded in the report (default: this one)"
    )
    parser.add_argument("--note", default=None, help="with --render: a note shown at the top of the report")
    args = parser.parse_args(argv)

    from .report import write_report

    if args.render is not None:
        results = combine_results([json.loads(path.read_text()) for path in args.render])
        if args.note:
            results["note"] = " ".join(filter(None, [results.get("note"), args.note]))
        write_report(args.output, results)
        say(f"wrote {args.output}")
        return 0

    for library, python in PYTHONS.items():
        if not python.exists():
            raise SystemExit(f"{python} is missing ({library}); run `make bench`, which installs it")
    settings = build_settings(args)
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    airpeer_code = _airpeer_code(args.airpeer_commit, work)
    if airpeer_code.get("src"):
        settings = replace(settings, airpeer_src=airpeer_code["src"])
    if args.airpeer_after:
        settings = replace(
            settings, airpeer_after=args.airpeer_after, airpeer_after_until=args.airpeer_after_until
        )
    plans = settings.plans
    if args.only:
        wanted = {tuple(int(x) for x in item.split(":")) for item in args.only.split(",")}
        plans = tuple(p for p in plans if (p.major, p.dags) in wanted)
    command = args.command or " ".join(
        shlex.quote(a) for a in [Path(sys.executable).name, "-m", "benchmarks", *(argv or sys.argv[1:])]
    )
    results: dict[str, Any] = {
        "command": command,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tiny": settings.tiny,
        "machine": machine_info(),
        "airpeer_code": airpeer_code,
        "settings": {k: v for k, v in asdict(settings).items() if k != "plans"},
        # A run of some plans or parts only: the report keeps what it did not re-run from the page before.
        "partial": bool(args.only) or set(settings.cases) != set(CASE_KINDS),
        "stacks": [],
    }
    results_path = work / "results.json"
    for plan in plans:
        try:
            results["stacks"].append(StackRun(plan, settings, work).run())
        except (AdapterError, RuntimeError) as exc:
            say(f"plan Airflow {plan.major} N={plan.dags} failed: {exc}")
            results["stacks"].append({"major": plan.major, "dags": plan.dags, "error": str(exc)})
        results_path.write_text(json.dumps(results, indent=1, default=_json_default))
    waited = [s["airpeer_code"] for s in results["stacks"] if "airpeer_code" in s]
    if waited:
        results["airpeer_code"] = waited[0]
    results["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results_path.write_text(json.dumps(results, indent=1, default=_json_default))
    write_report(args.output, results)
    say(f"wrote {args.output} (raw figures in {results_path})")
    return 1 if any("error" in stack for stack in results["stacks"]) else 0


#: --airpeer-after: the commit found, per text, for the plans after the first.
_RESOLVED: dict[str, dict[str, Any]] = {}


def combine_results(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One report's results from runs of different plans (e.g. run at the same time by two processes)."""
    if len(runs) == 1:
        return runs[0]
    first = runs[0]
    order = [(p.major, p.dags) for p in FULL_PLANS]
    by_plan: dict[tuple[int, int], dict[str, Any]] = {}
    for run in runs:
        for stack in run["stacks"]:
            plan = (stack["major"], stack["dags"])
            if plan not in by_plan:
                by_plan[plan] = dict(stack)
                continue
            # The same plan in a later run (other parts of it): what that run measured replaces the earlier.
            merged = by_plan[plan]
            for part in ("loads", "latency", "live", "mapped_loads", "mapped_sensor"):
                if stack.get(part):
                    merged[part] = stack[part]
            cases = {case["label"]: case for case in merged.get("sensors", [])}
            cases.update({case["label"]: case for case in stack.get("sensors", [])})
            merged["sensors"] = list(cases.values())
    stacks = sorted(
        by_plan.values(),
        key=lambda st: order.index((st["major"], st["dags"])) if (st["major"], st["dags"]) in order else 99,
    )
    # Which airpeer each plan measured (a plan of an --airpeer-after run says so itself).
    measured = [
        stack.get("airpeer_code") or run.get("airpeer_code") or {} for run in runs for stack in run["stacks"]
    ]
    codes = {(code.get("commit"), bool(code.get("dirty"))) for code in measured}
    if len(codes) > 1:
        raise SystemExit(f"these runs measured different airpeer code: {sorted(codes)}")
    return {
        **first,
        "airpeer_code": next((code for code in measured if code.get("src")), first.get("airpeer_code")),
        "command": " ; ".join(run["command"] for run in runs),
        "started": min(run["started"] for run in runs),
        "finished": max(run.get("finished", run["started"]) for run in runs),
        "partial": any(run.get("partial") for run in runs) or len(stacks) < len(FULL_PLANS),
        "stacks": stacks,
        "note": first.get("note") or _combined_note(runs),
    }


def _combined_note(runs: list[dict[str, Any]]) -> str:
    spans = sorted((run["started"], run.get("finished", run["started"])) for run in runs)
    overlap = any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))
    return (
        f"{len(runs)} runs of the harness, each with its own plans, combined (`--render` of their results.json)"
        + (
            "; they ran at the same time, on the same cores, each adding to the other's load: read the figures "
            "with the load averages shown per case."
            if overlap
            else "."
        )
    )


def _airpeer_code(commit: str | None, work: Path) -> dict[str, Any]:
    """Which airpeer is measured: a commit's sources extracted under `work`, or the checkout (and if it is dirty)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    if commit is None:
        head = git("rev-parse", "--short", "HEAD")
        dirty = bool(git("status", "--porcelain", "--", "src"))
        return {"commit": head, "dirty": dirty, "src": None}
    full = git("rev-parse", "--verify", f"{commit}^{{commit}}")
    target = work / f"airpeer-src-{full[:12]}"
    if not (target / "src" / "dagster_airpeer").exists():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", full, "src"], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return {"commit": git("rev-parse", "--short", full), "dirty": False, "src": str(target / "src"),
            "subject": git("log", "-1", "--format=%s", full)[:120]}  # fmt: skip


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)
