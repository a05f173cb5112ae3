"""Dagster killed between storing a tick's events and its cursor: nothing lost, nothing doubled.

Dagster's sensor daemon stores a tick's asset events one by one and then the cursor (dagster/_daemon/
sensor.py). Killed in between, it evaluates again from the previous cursor: the completions of the
interrupted tick are delivered again, and without a check the events it had already stored would be doubled.
(Only a tick with run requests reserves them together with its new cursor in the tick record first; those
ticks are resumed rather than re-evaluated if the daemon comes back within Dagster's resume window.)

Shown twice: by replaying a tick in-process (deterministic counts), and with the real dagster-daemon killed
by SIGKILL right after it stored the first event of a tick. Since #13.17 the next tick reads Dagster's event
log once before it emits and skips the completions already stored there: nothing is doubled either.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest

from devtools.dagster_dev import init_dagster_home
from reliability import oracle
from reliability.fake_airflow import FakeAirflow
from reliability.harness import drain, peer_fake
from reliability.ledger import compare, primary_counts, recorded_events
from reliability.ticker import Ticker

DEFS = Path(__file__).parent / "defs"


@dg.asset_check(asset=dg.AssetKey(["peered", "dag", "alpha"]))
def alpha_is_fine() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


@pytest.mark.parametrize("stored_before_crash", [0, 3, 8], ids=["none-stored", "some-stored", "all-stored"])
def test_replayed_tick_skips_what_the_crashed_tick_stored(
    stored_before_crash: int, fake: FakeAirflow, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    peered = peer_fake(fake, tmp_path / "snap", defs=dg.Definitions(asset_checks=[alpha_is_fine]))
    defs = peered.build()
    ticker = Ticker(dagster_instance, peered.sensor)
    drain(ticker, defs)
    now = datetime.now(timezone.utc)
    for i in range(8):
        fake.add_run("alpha", f"fresh_{i}", now - timedelta(seconds=40 - i))  # 8 successes: 8 events
    cursor_before = ticker.cursor
    crashed = ticker.evaluate(defs)  # what the killed daemon had computed
    outcome = ticker.tick(defs, crash_after_events=stored_before_crash)
    assert not outcome.cursor_stored and ticker.cursor == cursor_before
    replay = ticker.tick(defs)  # the restarted daemon, from the stored cursor
    # It finds the events the killed tick stored in Dagster's event log and emits only the others (#13.17;
    # before, it emitted all 8 again and the stored ones were doubled).
    assert len(crashed.asset_events) == 8
    assert replay.events == 8 - stored_before_crash
    # The check run is requested under the same run key: Dagster launches it once.
    assert [r.run_key for r in crashed.run_requests or []] == [r.run_key for r in replay.run_requests]
    verdict = compare(fake.completions(), recorded_events(dagster_instance))
    assert not verdict.lost and not verdict.unexpected
    assert verdict.doubled == []
    counts = primary_counts(recorded_events(dagster_instance))
    assert all(n == 1 for n in counts.values())
    # And it settles: later ticks add nothing.
    assert all(o.events == 0 for o in drain(ticker, defs)[1:])


# -- the real dagster-daemon --------------------------------------------------------------------------------


def _daemon(
    home: Path, workspace: Path, stack: Any, log: Path, extra_env: dict[str, str]
) -> subprocess.Popen[bytes]:
    init_dagster_home(home)  # before the daemon and its code server race to create it (idempotent)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "AIRPEER_TEST_AIRFLOW_URL": stack.url,
        "AIRPEER_TEST_AIRFLOW_USER": stack.username,
        "AIRPEER_TEST_AIRFLOW_PASSWORD": stack.password,
        **extra_env,
    }
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(workspace)],
        cwd=home.parent,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    # The group may outlive its leader (the code server): make sure it is gone.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(0.2)


def _wait(predicate: Callable[[], bool], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1)
    raise AssertionError(
        f"timed out waiting for {what}; daemon log tail:\n{log.read_text(errors='replace')[-3000:]}"
    )


@pytest.mark.integration
def test_real_daemon_killed_after_storing_events_before_the_cursor(
    airflow3: Any, seeded3: Any, tmp_path: Path
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(f"load_from:\n  - python_file: {DEFS / 'crash_peer.py'}\n")
    marker = tmp_path / "crashed-after-first-event"
    log = tmp_path / "daemon.log"
    # The seeded runs end 6 to 26 minutes before the session's start; the daemon looks back 30 minutes, so
    # its first tick finds all of them however late in the session this test runs.
    lookback = {"AIRPEER_TEST_LOOKBACK_MINUTES": "30"}
    since = datetime.now(timezone.utc) - timedelta(minutes=29)
    expected = oracle.completions(airflow3, since)
    assert len(expected) >= 10

    first = _daemon(
        home,
        workspace,
        airflow3,
        log,
        {"PYTHONPATH": str(DEFS), "AIRPEER_CRASH_MARKER": str(marker), **lookback},
    )
    try:
        _wait(marker.exists, 180, "the first stored event of a tick", log)
    finally:
        _stop(first, signal.SIGKILL)  # killed mid-tick: one event stored, no cursor
    with dg.DagsterInstance.from_config(str(home)) as instance:
        stored_by_the_killed_tick = primary_counts(recorded_events(instance))
    assert sum(stored_by_the_killed_tick.values()) == 1

    second = _daemon(home, workspace, airflow3, log, lookback)
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:

            def caught_up() -> bool:
                verdict = compare(expected, recorded_events(instance), since=since)
                return not verdict.lost

            _wait(caught_up, 180, "every completion to be recorded after the restart", log)
            time.sleep(6)  # a few more ticks: they must add nothing
            verdict = compare(expected, recorded_events(instance), since=since)
    finally:
        _stop(second)
    assert not verdict.lost and not verdict.unexpected, verdict.summary()
    # The restarted first tick found the killed tick's event in Dagster's event log: nothing doubled (#13.17;
    # before, the completion whose event was stored was recorded twice).
    assert verdict.doubled == [], verdict.summary()
    assert seeded3.run_ids


# -- a slow Airflow under the real daemon: the tick ends in airpeer's hands, not Dagster's timeout --------------


class SlowProxy:
    """A loopback HTTP proxy to a real Airflow that turns slow for `slow_for` seconds from the `slow_from`-th
    run-list request on: each request in that period waits `delay` seconds before it is forwarded."""

    def __init__(self, upstream: str, *, slow_from: int, delay: float, slow_for: float) -> None:
        self.upstream = upstream.rstrip("/")
        self.slow_from, self.delay, self.slow_for = slow_from, delay, slow_for
        self.lists = 0
        self.slow_since: float | None = None
        self.delayed = 0
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=60)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                proxy.maybe_wait(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "connection", "content-length")
                }
                try:
                    answer = proxy._client.request(
                        self.command, proxy.upstream + self.path, headers=headers, content=body
                    )
                except httpx.HTTPError:
                    self.send_error(502)
                    return
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in (
                        "content-length",
                        "transfer-encoding",
                        "connection",
                        "content-encoding",
                    ):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                # The client may have given up waiting, as it should.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(answer.content)

            do_GET = do_POST = do_PATCH = do_DELETE = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def maybe_wait(self, path: str) -> None:
        with self._lock:
            if "/dagRuns/list" in path:
                self.lists += 1
                if self.lists == self.slow_from:
                    self.slow_since = time.monotonic()
            slow = self.slow_since is not None and time.monotonic() - self.slow_since < self.slow_for
            if slow:
                self.delayed += 1
        if slow:
            time.sleep(self.delay)

    def __enter__(self) -> SlowProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()


def _ticks(instance: dg.DagsterInstance, name: str) -> list[Any]:
    states = [s for s in instance.all_instigator_state() if s.name == name]
    if not states:
        return []
    return list(instance.get_ticks(states[0].instigator_origin_id, states[0].selector_id, limit=1000))


@pytest.mark.integration
def test_real_daemon_slow_airflow_with_the_largest_budget_is_not_cut_by_dagsters_timeout(
    airflow3: Any, seeded3: Any, tmp_path: Path
) -> None:
    """#13.1: Dagster's sensor timeout at 30 s, the largest budget it allows (10 s). Airflow answers two
    pages quickly, then every request waits 12 s (past the 10 s read timeout) for 45 s. Before the fix the
    deadline was budget + 30 s = 40 s: the in-flight page's retries ran past 30 s and Dagster abandoned the
    tick with everything it had read. Now the deadline is 15 s: the tick delivers the pages it read and
    stores its cursor; later ticks fail cleanly (airpeer's error) until Airflow is fast again."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(f"load_from:\n  - python_file: {DEFS / 'crash_peer.py'}\n")
    log = tmp_path / "daemon.log"
    since = datetime.now(timezone.utc) - timedelta(minutes=29)
    expected = oracle.completions(airflow3, since)
    assert len(expected) >= 20
    settings = {
        "DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS": "30",
        "AIRPEER_TEST_TICK_BUDGET_SECONDS": "10",
        "AIRPEER_TEST_PAGE_SIZE": "5",
        "AIRPEER_TEST_PARALLEL_REQUESTS": "1",
        "AIRPEER_TEST_LOOKBACK_MINUTES": "30",
    }
    with SlowProxy(airflow3.url, slow_from=3, delay=12, slow_for=45) as proxy:

        class ViaProxy:
            url, username, password = proxy.url, airflow3.username, airflow3.password

        daemon = _daemon(home, workspace, ViaProxy, log, settings)
        try:
            with dg.DagsterInstance.from_config(str(home)) as instance:

                def caught_up() -> bool:
                    return not compare(expected, recorded_events(instance), since=since).lost

                _wait(caught_up, 240, "every completion to be recorded", log)
                verdict = compare(expected, recorded_events(instance), since=since)
                ticks = _ticks(instance, "crash_peered__airflow_dag_runs")
        finally:
            _stop(daemon)
    assert proxy.delayed > 0, "Airflow was never slow"
    assert not verdict.lost and not verdict.doubled and not verdict.unexpected, verdict.summary()
    errors = [t.error.message for t in ticks if t.error is not None]
    # Dagster abandoning the evaluation shows as DagsterUserCodeUnreachableError (gRPC DEADLINE_EXCEEDED).
    assert not [e for e in errors if "UserCodeUnreachable" in e or "DEADLINE_EXCEEDED" in e], errors
    # The slow period's first tick kept what it had read: the earliest tick stored events and its cursor.
    first = min(ticks, key=lambda t: t.timestamp)
    # (SKIPPED is Dagster's status for a tick that requested no run; its asset events were stored.)
    assert first.status.value in ("SUCCESS", "SKIPPED") and first.cursor is not None, first.error
