"""What both library adapters share: the JSON-lines protocol and the measuring loops.

An adapter is a process started by the orchestrator in its library's virtual environment. It reads one JSON
command per line on stdin and answers with JSON lines on stdout: zero or more progress lines
(``{"progress": ...}``) then exactly one final line (``{"result": ...}`` or ``{"error": ...}``). Library
output is moved to stderr so that stdout carries only the protocol.

The measuring loops live here, so both libraries are timed by the same code: a library adapter only says how
to build its definitions, how many HTTP requests it has sent so far, where its sensor starts, and which
Airflow run an event belongs to. Only dagster (present in both environments) and the standard library are
imported at module level.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

import dagster as dg

#: The observe cases' task mappings, as the orchestrator sends them: ``{"dag_ids": [...], "task_ids": [...]}``
#: (every listed task of every listed DAG builds one asset).
TaskMappings = dict[str, list[str]]
#: First part of the key of every task-mapped asset: ``bench_task/<dag_id>/<task_id>``.
TASK_ASSET_PREFIX = "bench_task"


def task_specs(task_mappings: TaskMappings) -> dict[str, dict[str, list[dg.AssetSpec]]]:
    """``{dag_id: {task_id: [spec]}}``: one asset per task, each depending on its DAG's previous task's asset.

    Each library passes every DAG's dict to its own ``assets_with_task_mappings(dag_id, task_mappings=...)``.
    """
    out: dict[str, dict[str, list[dg.AssetSpec]]] = {}
    for dag_id in task_mappings["dag_ids"]:
        by_task: dict[str, list[dg.AssetSpec]] = {}
        previous: dg.AssetKey | None = None
        for task_id in task_mappings["task_ids"]:
            key = dg.AssetKey([TASK_ASSET_PREFIX, dag_id, task_id])
            by_task[task_id] = [dg.AssetSpec(key=key, deps=[previous] if previous is not None else [])]
            previous = key
        out[dag_id] = by_task
    return out


def task_of_key(key: dg.AssetKey) -> tuple[str, str] | None:
    """(dag_id, task_id) of a task-mapped asset's key, None for any other asset."""
    path = key.path
    if len(path) == 3 and path[0] == TASK_ASSET_PREFIX:
        return path[1], path[2]
    return None


class Adapter:
    """One library behind the common interface. Subclasses fill in the library-specific hooks."""

    library = "?"

    def __init__(self) -> None:
        self.url = ""
        self.username = ""
        self.password = ""
        self.name = "airflow_instance_one"
        self.major = 0
        self.work_dir = Path(tempfile.mkdtemp(prefix="bench-adapter-"))
        # State of the last sensor run, kept for the idle ticks and the store measurement.
        self._defs: dg.Definitions | None = None
        self._cursor: str | None = None
        self._instance: dg.DagsterInstance | None = None
        self._events: list[Any] = []
        self._requests: Counter[str] = Counter()
        self._requests_lock = threading.Lock()
        self._store_budget: float | None = None
        self._store_spent = 0.0

    # ------------------------------------------------------------------ hooks for the libraries

    def build_defs(
        self,
        *,
        show_dag_source: bool,
        cache_dir: Path | None,
        history_from: float,
        task_mappings: TaskMappings | None = None,
    ) -> dg.Definitions:
        """Build the library's definitions; its sensor must import runs that ended after ``history_from``.

        ``task_mappings``: also one asset per (DAG, task) named, mapped to its task with the library's own
        ``assets_with_task_mappings`` and passed in ``defs`` (see :func:`task_specs`).
        """
        raise NotImplementedError

    def record(self, method: str, path: str) -> None:
        """Count one HTTP request (called by the library adapters' hooks, from any thread)."""
        endpoint = f"{method} {_normalize(path)}"
        with self._requests_lock:
            self._requests[endpoint] += 1

    def requests_sent(self) -> int:
        """HTTP requests sent to Airflow since the adapter started."""
        with self._requests_lock:
            return sum(self._requests.values())

    def before_build(self) -> None:
        """Called (untimed) before each build of the definitions; a library may need to pace its logins."""

    def requests_snapshot(self) -> Counter[str]:
        with self._requests_lock:
            return Counter(self._requests)

    def initial_cursor(self, history_from: float) -> str | None:
        """The cursor the first tick starts from (None when the library derives it from its definitions)."""
        return None

    def identify(self, event: Any) -> list[Any]:
        """Return ``[kind, dag_id, run_id, passed]`` of an event (kind "mat" or "check"; passed None for mats).

        A materialization of a task-mapped asset (:func:`task_of_key`) is ``["task", dag_id, run_id, task_id,
        metadata_ok]``: DAG and task from the asset key, the run from the event's metadata; ``metadata_ok``
        says whether the event's own task metadata agrees (None: the library puts none on it). A check
        evaluation on such an asset is ``["taskcheck", dag_id, run_id, task_id, passed]``.
        """
        raise NotImplementedError

    def watermark(self, cursor: str | None) -> float | None:
        """Epoch seconds of the position the library's cursor says everything before it was read."""
        return None

    def build_live_defs(self, *, history_from: float, sensor_interval_s: int | None) -> dg.Definitions:
        """Definitions with the library's default sensor settings (the interval overridden when given)."""
        raise NotImplementedError(f"{self.library} has no live case")

    def versions(self) -> dict[str, str]:
        """Versions of the packages that matter for this library."""
        return {"dagster": dg.__version__, "python": sys.version.split()[0]}

    # ------------------------------------------------------------------ commands

    def cmd_init(
        self, url: str, username: str, password: str, name: str = "airflow_instance_one", major: int = 0
    ) -> dict[str, Any]:
        self.url, self.username, self.password, self.name = url, username, password, name
        self.major = major
        return {"library": self.library, "versions": self.versions()}

    def cmd_load(self, show_dag_source: bool, repeats: int, cache_dir: str | None = None,
                 fresh_cache_each: bool = False,
                 task_mappings: TaskMappings | None = None) -> dict[str, Any]:  # fmt: skip
        """Build the definitions ``repeats`` times; each build is timed and its requests counted.

        ``cache_dir`` is passed to libraries that persist state between loads (a reload reuses it);
        ``fresh_cache_each`` empties it before every build (every build is then a first load);
        ``task_mappings``: definitions with an asset mapped to each of those tasks (the observe stage).
        """
        walls: list[float] = []
        cpus: list[float] = []
        requests: list[int] = []
        endpoints: list[dict[str, int]] = []
        assets = with_source = 0
        for _ in range(repeats):
            target: Path | None = None
            if cache_dir is not None:
                target = Path(cache_dir)
                if fresh_cache_each and target.exists():
                    _empty_dir(target)
                target.mkdir(parents=True, exist_ok=True)
            self.before_build()
            _collect_garbage()
            before = self.requests_snapshot()
            cpu0 = time.process_time()
            started = time.perf_counter()
            defs = self.build_defs(
                show_dag_source=show_dag_source,
                cache_dir=target,
                history_from=time.time(),
                task_mappings=task_mappings,
            )
            # Resolving the repository is what a code server does right after importing the module.
            repo = defs.get_repository_def()
            walls.append(time.perf_counter() - started)
            cpus.append(time.process_time() - cpu0)
            delta = self.requests_snapshot() - before
            requests.append(sum(delta.values()))
            endpoints.append(dict(delta))
            keys = list(repo.asset_graph.get_all_asset_keys())
            assets = len(keys)
            task_assets = sum(1 for key in keys if task_of_key(key) is not None)
            with_source = _count_assets_with_source(repo)
        return {"wall_s": walls, "cpu_s": cpus, "requests": requests, "endpoints": endpoints,
                "assets": assets, "task_assets": task_assets, "assets_with_source": with_source}  # fmt: skip

    def cmd_sensor(self, history_from: float, deadline_s: float, max_ticks: int = 10_000,
                   profile_path: str | None = None, emit: Callable[[dict[str, Any]], None] | None = None,
                   store: bool = False, store_budget_s: float | None = None,
                   task_mappings: TaskMappings | None = None) -> dict[str, Any]:  # fmt: skip
        """Tick the sensor from ``history_from`` until a tick emits nothing (caught up), or the deadline.

        Definitions are built first (not timed). Every tick reports wall and CPU time, requests and events as
        a progress line, so the orchestrator keeps the figures of a run it has to kill at its time cap.

        ``store``: end to end, as Dagster's sensor daemon runs a tick: the sensor's context holds a real
        DagsterInstance (SQLite, in a temporary DAGSTER_HOME), and after each evaluation every asset event is
        stored with ``report_runless_asset_event``, one after the other, before the next cursor is kept
        (dagster/_daemon/sensor.py does exactly this). The storing is timed per tick, apart from the evaluation.
        Without it the context holds an ephemeral instance and nothing is stored. ``store_budget_s`` bounds the
        storing of the whole run (SQLite on a busy shared disk can take 10x longer per event): past it, the
        tick's remaining events are counted as not stored, and the report extrapolates their time.

        ``task_mappings``: the definitions map an asset to each of those tasks (see :meth:`cmd_load`).
        """
        self._store_budget = store_budget_s
        self._store_spent = 0.0
        with contextlib.ExitStack() as stack:
            instance = stack.enter_context(_sqlite_instance()) if store else dg.DagsterInstance.ephemeral()
            try:
                return self._sensor_run(
                    instance, store, history_from, deadline_s, max_ticks, profile_path, emit, task_mappings
                )
            finally:
                if store:
                    # That instance is disposed with its home; idle ticks after it get an ephemeral one.
                    self._instance = dg.DagsterInstance.ephemeral()

    def _sensor_run(self, instance: dg.DagsterInstance, store: bool, history_from: float, deadline_s: float,
                    max_ticks: int, profile_path: str | None, emit: Callable[[dict[str, Any]], None] | None,
                    task_mappings: TaskMappings | None = None) -> dict[str, Any]:  # fmt: skip
        self.before_build()
        defs = self.build_defs(
            show_dag_source=False, cache_dir=None, history_from=history_from, task_mappings=task_mappings
        )
        repo = defs.get_repository_def()
        sensors = list(repo.sensor_defs)
        if len(sensors) != 1:
            raise RuntimeError(f"expected exactly one sensor, found {[s.name for s in sensors]}")
        sensor = sensors[0]
        self._defs = defs
        self._instance = instance
        self._cursor = self.initial_cursor(history_from)
        self._events = []
        _collect_garbage()
        profiler = None
        if profile_path:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.002)
            profiler.start()
        ticks: list[dict[str, Any]] = []
        started = time.perf_counter()
        caught_up = False
        try:
            while len(ticks) < max_ticks:
                tick = self._tick(sensor, repo, store=store)
                ticks.append(tick)
                if emit is not None:
                    emit({"tick": tick})
                if tick["events"] == 0:
                    caught_up = True
                    break
                if time.perf_counter() - started > deadline_s:
                    break
        finally:
            profile = None
            if profiler is not None:
                profiler.stop()
                Path(profile_path or "").write_text(
                    profiler.output_text(unicode=False, color=False, show_all=False, timeline=False)
                )
                profile = summarize_profile(profiler.last_session)
        return {
            "sensor": sensor.name,
            "ticks": ticks,
            "caught_up": caught_up,
            "events": [self.identify(e) for e in self._events],
            "profile": profile,
            "stored": store,
        }

    def cmd_idle(self, ticks: int) -> dict[str, Any]:
        """Tick the caught-up sensor again ``ticks`` times (nothing new in Airflow)."""
        if self._defs is None:
            raise RuntimeError("run the sensor before the idle ticks")
        repo = self._defs.get_repository_def()
        sensor = next(iter(repo.sensor_defs))
        return {"ticks": [self._tick(sensor, repo) for _ in range(ticks)]}

    def cmd_live(self, history_from: float, expected_runs: int, commits_path: str, stop_after_s: float,
                 idle_ticks_after: int = 2, sensor_interval_s: int | None = None,
                 emit: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:  # fmt: skip
        """Tick the sensor at its own interval while the live seeder commits runs, as the daemon would.

        A tick starts ``minimum_interval_seconds`` after the previous one started (or when it ends, if it took
        longer), with the library's default settings. Events are checked, not stored: storing is measured by
        the end-to-end sensor runs, and on SQLite it would take longer than the seeding itself here. Stops
        once the seeder is done (its last line in ``commits_path``), every expected run was reported and
        ``idle_ticks_after`` more ticks emitted nothing; or after ``stop_after_s``.
        """
        defs = self.build_live_defs(history_from=history_from, sensor_interval_s=sensor_interval_s)
        repo = defs.get_repository_def()
        sensor = next(iter(repo.sensor_defs))
        interval = float(sensor.minimum_interval_seconds or 30)
        self._defs = defs
        self._cursor = self.initial_cursor(history_from)
        self._events = []
        started = time.monotonic()
        ticks: list[dict[str, Any]] = []
        reported: set[tuple[str, str]] = set()
        quiet_after_all = 0
        with _sqlite_instance() as instance:
            self._instance = instance
            while time.monotonic() - started < stop_after_s:
                tick_start = time.time()
                before = len(self._events)
                tick = self._tick(sensor, repo, store=False)
                new = [self.identify(e) for e in self._events[before:]]
                self._events = []  # the identities are kept; 50,000 Dagster events need not be
                tick.update(start=tick_start, end=time.time(), watermark=self.watermark(self._cursor),
                            cursor_bytes=len(self._cursor or ""), identities=new)  # fmt: skip
                reported.update((dag, run) for _, dag, run, _ in new)
                ticks.append(tick)
                if emit is not None:
                    emit({"tick": {k: v for k, v in tick.items() if k != "identities"}})
                done = _seeder_done(Path(commits_path))
                if done and len(reported) >= expected_runs:
                    quiet_after_all = quiet_after_all + 1 if tick["events"] == 0 else 0
                    if quiet_after_all >= idle_ticks_after:
                        break
                wait = tick_start + interval - time.time()
                if wait > 0:
                    time.sleep(wait)
        self._instance = None
        return {"sensor": sensor.name, "interval_s": interval, "ticks": ticks,
                "finished": quiet_after_all >= idle_ticks_after}  # fmt: skip

    # ------------------------------------------------------------------ internals

    def _tick(self, sensor: dg.SensorDefinition, repo: Any, store: bool = False) -> dict[str, Any]:
        context = dg.build_sensor_context(instance=self._instance, cursor=self._cursor, repository_def=repo)
        # The sensor's own log lines (airpeer reports its pages, and its event-log check, there).
        captured = _Capture()
        context.log.addHandler(captured)
        before = self.requests_snapshot()
        cpu0 = time.process_time()
        started = time.perf_counter()
        result = sensor(context)
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu0
        context.log.removeHandler(captured)
        if not isinstance(result, dg.SensorResult):
            raise RuntimeError(f"sensor returned {type(result).__name__}, expected SensorResult")
        events = list(result.asset_events or [])
        store_s = 0.0
        stored = 0
        if store:
            assert self._instance is not None
            # What the daemon does with a tick's result before it writes the cursor (dagster/_daemon/sensor.py).
            stored_at = time.perf_counter()
            budget = self._store_budget
            for event in events:
                if budget is not None and self._store_spent + time.perf_counter() - stored_at > budget:
                    break
                self._instance.report_runless_asset_event(event)
                stored += 1
            store_s = time.perf_counter() - stored_at
            self._store_spent += store_s
        # airpeer returns its cursor on the result; dagster-airlift sets it on the context.
        self._cursor = result.cursor if result.cursor is not None else context.cursor
        self._events.extend(events)
        delta = self.requests_snapshot() - before
        return {
            "wall_s": wall,
            "cpu_s": cpu,
            "requests": sum(delta.values()),
            "endpoints": dict(delta),
            "events": len(events),
            "store_s": store_s,
            "stored": stored,
            "unstored": len(events) - stored if store else 0,
            "log": captured.lines,
        }


class _Capture(logging.Handler):
    """Keeps the sensor's log lines of one tick (the first few, shortened)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.lines) < 8:
            self.lines.append(record.getMessage()[:600])


@contextlib.contextmanager
def _sqlite_instance() -> Iterator[dg.DagsterInstance]:
    """A real DagsterInstance on SQLite in a temporary DAGSTER_HOME (Dagster's default storage), as the daemon's."""
    home = tempfile.mkdtemp(prefix="bench-dagster-home-")
    Path(home, "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = home
    try:
        instance = dg.DagsterInstance.get()
        # A daemon's instance has long been in use: its storage is created and its runless shard exists. Pay
        # that here, untimed (about 1 s for the first event stored), with an observation, which the sensors'
        # own queries (materializations, check evaluations) do not read.
        instance.report_runless_asset_event(dg.AssetObservation(asset_key=dg.AssetKey(["bench_warm_up"])))
        instance.get_latest_materialization_event(dg.AssetKey(["bench_warm_up"]))
        try:
            yield instance
        finally:
            instance.dispose()
    finally:
        if previous is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = previous
        shutil.rmtree(home, ignore_errors=True)


def _seeder_done(path: Path) -> bool:
    """Whether the live seeder wrote its last line (``{"done": true}``)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 200))
            return b'"done": true' in handle.read()
    except OSError:
        return False


_ID_SEGMENT = re.compile(r"/(dags|dagRuns|dagSources|taskInstances|dagVersions)/(?!(?:~|list)(?:/|$))[^/]+")


def _normalize(path: str) -> str:
    """``/api/v1/dags/my_dag/dagRuns/r1`` -> ``/api/v1/dags/{id}/dagRuns/{id}``: endpoints, not objects."""
    path = path.split("?", 1)[0]
    return _ID_SEGMENT.sub(lambda m: f"/{m.group(1)}/{{id}}", path)


#: Where a sampled frame's own time is attributed, by the first matching fragment of its file path.
_AREAS = (
    ("httpcore/_backends", "waiting for Airflow (socket I/O)"),
    ("/ssl.py", "waiting for Airflow (socket I/O)"),
    ("/socket.py", "waiting for Airflow (socket I/O)"),
    # airpeer reads pages on worker threads; pyinstrument samples the sensor's thread, which waits for them.
    ("concurrent/futures", "waiting for Airflow (pages read on worker threads)"),
    ("/threading.py", "waiting for Airflow (pages read on worker threads)"),
    ("dagster_airpeer", "airpeer"),
    ("dagster_airlift", "dagster-airlift"),
    ("/httpx/", "HTTP client (httpx, httpcore, h11)"),
    ("/httpcore/", "HTTP client (httpx, httpcore, h11)"),
    ("/h11/", "HTTP client (httpx, httpcore, h11)"),
    ("/requests/", "HTTP client (requests, urllib3)"),
    ("/urllib3/", "HTTP client (requests, urllib3)"),
    ("/pydantic", "pydantic (validation)"),
    ("/tenacity/", "tenacity (retries)"),
    ("/dagster", "dagster (events, metadata, serdes, instance)"),
    ("/sqlalchemy/", "SQLAlchemy (Dagster instance)"),
    ("/json/", "json"),
    ("/logging/", "logging"),
)


def summarize_profile(session: Any) -> dict[str, Any]:
    """Own time of the sampled frames grouped by area (library), and the 15 functions with most own time."""
    root = session.root_frame() if session is not None else None
    by_area: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    # Built-in functions (socket.recv, json's C scanner...) have no file: they count for their caller's area.
    stack: list[tuple[Any, str]] = [(root, "other (Python, stdlib)")] if root is not None else []
    while stack:
        frame, inherited = stack.pop()
        path = (frame.file_path or "").replace("\\", "/")
        builtin = not path or path.startswith("<")
        area = (
            inherited
            if builtin
            else next((label for frag, label in _AREAS if frag in path), "other (Python, stdlib)")
        )
        if (builtin and frame.function.startswith("socket.")) or frame.function.startswith("_ssl."):
            area = "waiting for Airflow (socket I/O)"
        stack.extend((child, area) for child in frame.children)
        own = frame.total_self_time if not frame.is_synthetic else 0.0
        if own <= 0:
            continue
        by_area[area] += own
        short = "/".join(path.split("/")[-2:]) if path else "?"
        by_function[f"{frame.function} ({short}:{frame.line_no})"] += own
    total = sum(by_area.values())
    return {
        "total_s": total,
        "by_area": by_area.most_common(),
        "top_functions": by_function.most_common(15),
    }


def _count_assets_with_source(repo: Any) -> int:
    count = 0
    for key in repo.asset_graph.get_all_asset_keys():
        metadata: Mapping[str, Any] = repo.asset_graph.get(key).metadata or {}
        if any("source" in name.lower() for name in metadata):
            count += 1
    return count


def _empty_dir(path: Path) -> None:
    for child in sorted(path.rglob("*"), reverse=True):
        if child.is_dir():
            child.rmdir()
        else:
            child.unlink()


def _collect_garbage() -> None:
    """A full collection before a timed run (not timed), as `timeit` does: otherwise a run pays, at a random
    point, for a collection of the garbage the runs before it left (~0.1 s with Dagster's heap)."""
    gc.collect()


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def utc_from_timestamp(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def serve(adapter: Adapter) -> None:
    """Run the JSON-lines loop on stdin/stdout until EOF or a ``quit`` command."""
    # The protocol owns the real stdout; everything printed by libraries goes to stderr.
    protocol: TextIO = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr

    def send(message: dict[str, Any]) -> None:
        protocol.write(json.dumps(message) + "\n")
        protocol.flush()

    try:
        _serve_lines(adapter, send)
    finally:
        # The scratch directory (snapshots, caches of metadata-only loads) dies with the adapter.
        shutil.rmtree(adapter.work_dir, ignore_errors=True)


def _serve_lines(adapter: Adapter, send: Callable[[dict[str, Any]], None]) -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        command = request.pop("cmd")
        if command == "quit":
            send({"result": "bye"})
            return
        handler = getattr(adapter, f"cmd_{command}", None)
        try:
            if handler is None:
                raise ValueError(f"unknown command {command!r}")
            if command in ("sensor", "live"):
                request["emit"] = lambda progress: send({"progress": progress})
            send({"result": handler(**request)})
        except Exception:
            send({"error": traceback.format_exc()})
