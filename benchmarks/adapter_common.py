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

import gc
import json
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
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

import dagster as dg


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

    # ------------------------------------------------------------------ hooks for the libraries

    def build_defs(
        self, *, show_dag_source: bool, cache_dir: Path | None, history_from: float
    ) -> dg.Definitions:
        """Build the library's definitions; its sensor must import runs that ended after ``history_from``."""
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
        """Return ``[kind, dag_id, run_id, passed]`` of an event (kind "mat" or "check"; passed None for mats)."""
        raise NotImplementedError

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
                 fresh_cache_each: bool = False) -> dict[str, Any]:  # fmt: skip
        """Build the definitions ``repeats`` times; each build is timed and its requests counted.

        ``cache_dir`` is passed to libraries that persist state between loads (a reload reuses it);
        ``fresh_cache_each`` empties it before every build (every build is then a first load).
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
                show_dag_source=show_dag_source, cache_dir=target, history_from=time.time()
            )
            # Resolving the repository is what a code server does right after importing the module.
            repo = defs.get_repository_def()
            walls.append(time.perf_counter() - started)
            cpus.append(time.process_time() - cpu0)
            delta = self.requests_snapshot() - before
            requests.append(sum(delta.values()))
            endpoints.append(dict(delta))
            assets = len(list(repo.asset_graph.get_all_asset_keys()))
            with_source = _count_assets_with_source(repo)
        return {"wall_s": walls, "cpu_s": cpus, "requests": requests, "endpoints": endpoints,
                "assets": assets, "assets_with_source": with_source}  # fmt: skip

    def cmd_sensor(self, history_from: float, deadline_s: float, max_ticks: int = 10_000,
                   profile_path: str | None = None, emit: Callable[[dict[str, Any]], None] | None = None,
                   ) -> dict[str, Any]:  # fmt: skip
        """Tick the sensor from ``history_from`` until a tick emits nothing (caught up), or the deadline.

        Definitions are built first (not timed). Every tick reports wall and CPU time, requests and events as
        a progress line, so the orchestrator keeps the figures of a run it has to kill at its time cap.
        """
        self.before_build()
        defs = self.build_defs(show_dag_source=False, cache_dir=None, history_from=history_from)
        repo = defs.get_repository_def()
        sensors = list(repo.sensor_defs)
        if len(sensors) != 1:
            raise RuntimeError(f"expected exactly one sensor, found {[s.name for s in sensors]}")
        sensor = sensors[0]
        self._defs = defs
        self._instance = dg.DagsterInstance.ephemeral()
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
                tick = self._tick(sensor, repo)
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
        }

    def cmd_idle(self, ticks: int) -> dict[str, Any]:
        """Tick the caught-up sensor again ``ticks`` times (nothing new in Airflow)."""
        if self._defs is None:
            raise RuntimeError("run the sensor before the idle ticks")
        repo = self._defs.get_repository_def()
        sensor = next(iter(repo.sensor_defs))
        return {"ticks": [self._tick(sensor, repo) for _ in range(ticks)]}

    def cmd_store(self, limit: int | None = None) -> dict[str, Any]:
        """Store the events of the last sensor run in a Dagster instance on disk (SQLite), as the daemon does."""
        events = self._events if limit is None else self._events[:limit]
        with tempfile.TemporaryDirectory(prefix="bench-dagster-home-") as home:
            instance = dg.DagsterInstance.local_temp(home)
            try:
                started = time.perf_counter()
                for event in events:
                    instance.report_runless_asset_event(event)
                wall = time.perf_counter() - started
            finally:
                instance.dispose()
        return {"events": len(events), "wall_s": wall, "per_event_ms": 1000 * wall / max(1, len(events))}

    # ------------------------------------------------------------------ internals

    def _tick(self, sensor: dg.SensorDefinition, repo: Any) -> dict[str, Any]:
        context = dg.build_sensor_context(instance=self._instance, cursor=self._cursor, repository_def=repo)
        before = self.requests_snapshot()
        cpu0 = time.process_time()
        started = time.perf_counter()
        result = sensor(context)
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu0
        if not isinstance(result, dg.SensorResult):
            raise RuntimeError(f"sensor returned {type(result).__name__}, expected SensorResult")
        events = list(result.asset_events or [])
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
        }


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
            if command == "sensor":
                request["emit"] = lambda progress: send({"progress": progress})
            send({"result": handler(**request)})
        except Exception:
            send({"error": traceback.format_exc()})
