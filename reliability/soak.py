"""The soak run behind `make soak`: a real Airflow 3 kept busy while the sensor ticks and the api-server dies.

For `--minutes` (default 10) it runs, all on 127.0.0.1:

* a real Airflow 3.3 (`devtools.airflow_stack`) with the DAGs of `reliability/soak_dags` (quick, flaky,
  failing, chained, scheduled every 20 s);
* a load generator keeping a few manual runs in flight, and a clearer that clears finished runs so they run
  and complete again (a cleared run is several completions);
* a chaos thread stopping the api-server at random moments for a few seconds (on Airflow 3 it also serves
  task execution, so running tasks feel it too);
* an oracle polling Airflow's runs list with plain httpx every second, recording every completion
  (dag_id, run_id, end_date) as it happens;
* the airpeer sensor, evaluated every `--tick-seconds` and stored the way the daemon stores it (`Ticker`),
  with code location reloads and "Dagster restarts" (a new AirflowInstance continuing from the cursor).

Then it stops the load, lets the last runs end, drains the sensor and compares every completion with every
event (`reliability.ledger`): runs, completions, events, lost, doubled, unexpected and the largest delay
between a run's end and its first event. The figures go to docs/reliability.md and BENCHMARKS.md, between
`<!-- soak:start -->` and `<!-- soak:end -->`. Exit status 0 only with nothing lost or doubled.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import httpx

from devtools.airflow_stack import ROOT, AirflowStack

from . import oracle
from .harness import peer
from .ledger import Comparison, Completion, compare, completion_key, recorded_events
from .ticker import Ticker

SOAK_DAGS = Path(__file__).resolve().parent / "soak_dags"
MANUAL_DAGS = ("soak_empty", "soak_python", "soak_flaky", "soak_fail", "soak_chain")
START, END = "<!-- soak:start -->", "<!-- soak:end -->"


def log(message: str) -> None:
    print(f"[soak {datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Stats:
    """What happened during the soak, besides the comparison."""

    triggered: int = 0
    trigger_errors: int = 0
    cleared: int = 0
    clear_errors: int = 0
    outages: int = 0
    outage_seconds: float = 0.0
    ticks: int = 0
    failed_ticks: int = 0
    interrupted_ticks: int = 0
    reloads: int = 0
    restarts: int = 0
    oracle_polls: int = 0
    oracle_errors: int = 0
    states: Counter[str] = field(default_factory=Counter)


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.work = Path(args.work_dir).resolve()
        self.stop_load = threading.Event()
        self.stats = Stats()
        self.completions: set[Completion] = set()
        #: When the oracle first saw each completion in Airflow's API (seconds since the epoch).
        self.first_seen: dict[Completion, float] = {}
        self.lock = threading.Lock()
        self.api_up = threading.Event()
        self.api_up.set()
        self.stack: AirflowStack | None = None

    # -- Airflow side --------------------------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        assert self.stack is not None
        return httpx.Client(base_url=self.stack.api_url, timeout=10)

    def _token(self, http: httpx.Client) -> dict[str, str]:
        assert self.stack is not None
        response = http.post(
            f"{self.stack.url}/auth/token",
            json={"username": self.stack.username, "password": self.stack.password},
        )
        response.raise_for_status()
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    def recorder(self) -> None:
        """The oracle: every completion Airflow shows, recorded as it happens (polled every second)."""
        since = self.started - timedelta(minutes=1)
        with self._http() as http:
            headers: dict[str, str] = {}
            while not self.stop_recorder.is_set():
                try:
                    if not headers:
                        headers = self._token(http)
                    http.headers.update(headers)
                    found = oracle.finished_runs(self.stack, since, client=http)
                    seen_at = time.time()
                    with self.lock:
                        for run in found:
                            if run.get("end_date"):
                                key = completion_key(run["dag_id"], run["dag_run_id"], run["end_date"])
                                self.completions.add(key)
                                self.first_seen.setdefault(key, seen_at)
                    self.stats.oracle_polls += 1
                except (httpx.HTTPError, KeyError, ValueError):
                    self.stats.oracle_errors += 1
                self.stop_recorder.wait(1.0)

    def load(self) -> None:
        """Keep a few manual runs in flight; clear finished ones now and then so they complete again."""
        with self._http() as http:
            headers: dict[str, str] = {}
            cleared: Counter[tuple[str, str]] = Counter()
            while not self.stop_load.is_set():
                try:
                    if not headers:
                        headers = self._token(http)
                    http.headers.update(headers)
                    active = http.post(
                        "/dags/~/dagRuns/list",
                        json={"states": ["queued", "running"], "page_limit": 1},
                    ).json()["total_entries"]
                    for _ in range(max(0, self.args.in_flight - active)):
                        dag_id = self.rng.choice(MANUAL_DAGS)
                        response = http.post(f"/dags/{dag_id}/dagRuns", json={"logical_date": None})
                        if response.status_code == 200:
                            self.stats.triggered += 1
                        else:
                            self.stats.trigger_errors += 1
                    if self.rng.random() < self.args.clear_probability:
                        with self.lock:
                            candidates = sorted(
                                (d, r)
                                for d, r, end in self.completions
                                if cleared[(d, r)] < 2
                                and datetime.fromisoformat(end)
                                < datetime.now(timezone.utc) - timedelta(seconds=5)
                            )
                        if candidates:
                            dag_id, run_id = self.rng.choice(candidates)
                            response = http.post(
                                f"/dags/{dag_id}/dagRuns/{run_id}/clear", json={"dry_run": False}
                            )
                            if response.status_code == 200:
                                cleared[(dag_id, run_id)] += 1
                                self.stats.cleared += 1
                            else:
                                self.stats.clear_errors += 1
                except (httpx.HTTPError, KeyError, ValueError):
                    self.stats.trigger_errors += 1
                    headers = {}
                self.stop_load.wait(self.rng.uniform(0.5, 1.5))

    def chaos(self) -> None:
        """Stop the api-server at random moments, for a few seconds each time."""
        assert self.stack is not None
        while not self.stop_load.wait(self.rng.uniform(*self.args.outage_every)):
            down = self.rng.uniform(*self.args.outage_length)
            log(f"chaos: stopping the api-server for {down:.0f} s")
            started = time.monotonic()
            self.api_up.clear()
            try:
                self.stack.stop_api_server()
                self.stop_load.wait(down)
            finally:
                self.stack.start_api_server()
                self.api_up.set()
            self.stats.outages += 1
            self.stats.outage_seconds += time.monotonic() - started
            log(f"chaos: api-server back after {time.monotonic() - started:.0f} s")

    # -- Dagster side --------------------------------------------------------------------------------------

    def _peer(self) -> Any:
        assert self.stack is not None
        return peer(
            self.stack.url,
            self.stack.username,
            self.stack.password,
            self.work / "snapshots",
            name="soak",
            real_sleep=True,
            lookback=timedelta(hours=1),
        )

    def tick(self, ticker: Ticker, defs: dg.Definitions) -> int:
        outcome = ticker.tick(defs, raise_errors=False)
        self.stats.ticks += 1
        if outcome.failed:
            self.stats.failed_ticks += 1
            log(f"tick failed (as the daemon would record it): {str(outcome.error)[:160]}")
            return 0
        return outcome.events

    def run(self) -> int:
        args = self.args
        if self.work.exists():
            shutil.rmtree(self.work)
        dags = self.work / "dags"
        shutil.copytree(SOAK_DAGS, dags, ignore=shutil.ignore_patterns("__pycache__"))
        self.stack = AirflowStack(major=3, home=self.work / "airflow", dags_folder=dags)
        self.stop_recorder = threading.Event()
        threads: list[threading.Thread] = []
        try:
            log(f"starting Airflow 3 on {self.stack.url} ...")
            self.stack.start(progress=log)
            self.stack.wait_for_dags([*MANUAL_DAGS, "soak_scheduled"], timeout=240)
            self.started = datetime.now(timezone.utc)
            with dg.instance_for_test() as instance:
                peered = self._peer()
                defs = peered.build()
                ticker = Ticker(instance, peered.sensor)
                for target in (self.recorder, self.load, self.chaos):
                    thread = threading.Thread(target=target, name=target.__name__, daemon=True)
                    thread.start()
                    threads.append(thread)
                deadline = time.monotonic() + args.minutes * 60
                log(f"soak running for {args.minutes:g} min (tick every {args.tick_seconds:g} s)")
                n = 0
                while time.monotonic() < deadline:
                    n += 1
                    if n % 10 == 0:
                        defs = (
                            peered.build()
                        )  # a code location reload (from the snapshot when Airflow is down)
                        self.stats.reloads += 1
                    if n % 25 == 0:
                        # A Dagster restart: a fresh client (new login) continuing from the stored cursor.
                        peered = self._peer()
                        defs = peered.build()
                        ticker = Ticker(instance, peered.sensor, cursor=ticker.cursor)
                        self.stats.restarts += 1
                    self.tick(ticker, defs)
                    if n % 12 == 0:
                        log(
                            f"{self.stats.triggered} triggered, {self.stats.cleared} cleared, "
                            f"{len(self.completions)} completions seen, {self.stats.outages} outages, "
                            f"{self.stats.ticks} ticks ({self.stats.failed_ticks} failed)"
                        )
                    time.sleep(args.tick_seconds)
                log("stopping the load; waiting for the last runs to end ...")
                self.stop_load.set()
                for thread in threads[1:]:
                    thread.join(timeout=180)
                self.api_up.wait(120)
                self._wait_quiet(timeout=240)
                time.sleep(3)
                self.stop_recorder.set()
                threads[0].join(timeout=60)
                # A last full listing, in case the recorder's last poll raced a completion.
                with self.lock:
                    self.completions |= oracle.completions(self.stack, self.started - timedelta(minutes=1))
                log("draining the sensor ...")
                quiet = 0
                for _ in range(30):
                    quiet = quiet + 1 if self.tick(ticker, defs) == 0 else 0
                    if quiet >= 2:
                        break
                    time.sleep(1)
                events = recorded_events(instance)
                verdict = compare(self.completions, events)
                runs = oracle.finished_runs(self.stack, self.started - timedelta(minutes=1))
                self.stats.states.update(r["state"] for r in runs)
        finally:
            self.stop_load.set()
            self.stop_recorder.set()
            self.stack.stop()
        self.report(verdict)
        return 0 if not verdict.lost and not verdict.doubled else 1

    def _wait_quiet(self, timeout: float) -> None:
        assert self.stack is not None
        deadline = time.monotonic() + timeout
        with self._http() as http:
            http.headers.update(self._token(http))
            while time.monotonic() < deadline:
                try:
                    active = http.post(
                        "/dags/~/dagRuns/list",
                        json={"states": ["queued", "running"], "dag_ids": list(MANUAL_DAGS), "page_limit": 1},
                    ).json()["total_entries"]
                except (httpx.HTTPError, KeyError, ValueError):
                    active = -1
                if active == 0:
                    return
                time.sleep(2)
        log("some runs were still active at the end; they are not part of the comparison")

    # -- report --------------------------------------------------------------------------------------------

    def report(self, verdict: Comparison) -> None:
        s, a = self.stats, self.args
        delay = "n/a" if verdict.max_delay_seconds is None else f"{verdict.max_delay_seconds:.1f} s"
        # A run can become visible in the API long after its end date (a task's state reported late, the
        # api-server down): the delay after the oracle first saw it is airpeer's share.
        visible = {
            c: verdict.first_stored[c] - seen
            for c, seen in self.first_seen.items()
            if c in verdict.first_stored
        }
        worst_visible = max(visible, key=lambda c: visible[c], default=None)
        visible_delay = "n/a" if worst_visible is None else f"{visible[worst_visible]:.1f} s"
        worst = verdict.worst
        worst_text = ""
        if worst is not None and verdict.max_delay_seconds is not None:
            ended = datetime.fromisoformat(worst[2]).timestamp()
            seen = self.first_seen.get(worst)
            worst_text = (
                f"The largest delay after a run's end: `{worst[0]}` / `{worst[1]}` (ended {worst[2]}), "
                + (f"first seen in the API {seen - ended:.1f} s after its end, " if seen is not None else "")
                + f"first event {verdict.max_delay_seconds:.1f} s after its end."
            )
        when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        cleared_completions = verdict.completions - verdict.runs
        table = [
            "| figure | value |",
            "|---|---|",
            f"| duration of the load | {a.minutes:g} min (sensor tick every {a.tick_seconds:g} s) |",
            f"| runs (distinct dag_id, run_id) | {verdict.runs} |",
            f"| completions (dag_id, run_id, end_date) | {verdict.completions} ({cleared_completions} from cleared and rerun runs) |",
            f"| final states in Airflow | {', '.join(f'{k} {v}' for k, v in sorted(s.states.items()))} |",
            f"| events stored in Dagster | {verdict.events} |",
            f"| **lost** | **{len(verdict.lost)}** |",
            f"| **doubled** | **{len(verdict.doubled)}** |",
            f"| unexpected (event without an observed completion) | {len(verdict.unexpected)} |",
            f"| largest delay, run end -> first event | {delay} |",
            f"| largest delay, run visible in the API (polled every second) -> first event | {visible_delay} |",
            f"| api-server outages | {s.outages} ({s.outage_seconds:.0f} s in all, including restarts) |",
            f"| sensor ticks | {s.ticks} ({s.failed_ticks} failed while Airflow was down) |",
            f"| code location reloads / Dagster restarts | {s.reloads} / {s.restarts} |",
            f"| manual runs triggered / cleared | {s.triggered} / {s.cleared} |",
        ]
        body = "\n".join(
            [
                f"Soak of {when}: `make soak SOAK_MINUTES={a.minutes:g}` (seed {a.seed}), Airflow 3.3 on SQLite "
                "with the LocalExecutor, 2 cores shared with the rest of the machine.",
                "",
                *table,
                *(["", worst_text] if worst_text else []),
                "",
            ]
        )
        log("result:\n" + body)
        if verdict.lost or verdict.doubled or verdict.unexpected:
            details = {
                "lost": verdict.lost[:20],
                "doubled": verdict.doubled[:20],
                "unexpected": verdict.unexpected[:20],
            }
            log(json.dumps(details, indent=1))
        if not a.no_write:
            for path in (Path(a.doc), Path(a.benchmarks)):
                write_between_markers(path, body)
                log(f"wrote the figures into {path}")


def write_between_markers(path: Path, body: str) -> None:
    """Replace what lies between the soak markers of `path` (adding them at the end when absent)."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    block = f"{START}\n{body.rstrip()}\n{END}"
    if START in text and END in text and text.index(START) < text.index(END):
        before, rest = text.split(START, 1)
        after = rest.split(END, 1)[1]
        text = before + block + after
    else:
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + block + "\n"
    path.write_text(text, encoding="utf-8")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m reliability.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the load runs (default 10)")
    parser.add_argument("--tick-seconds", type=float, default=5.0, help="pause between sensor ticks")
    parser.add_argument("--in-flight", type=int, default=4, help="manual runs kept queued or running")
    parser.add_argument(
        "--clear-probability", type=float, default=0.15, help="chance per load step to clear a run"
    )
    parser.add_argument("--outage-every", type=float, nargs=2, default=(30.0, 90.0), metavar=("MIN", "MAX"))
    parser.add_argument("--outage-length", type=float, nargs=2, default=(2.0, 12.0), metavar=("MIN", "MAX"))
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    parser.add_argument("--work-dir", default=str(ROOT / ".work" / "soak"))
    parser.add_argument("--doc", default=str(ROOT / "docs" / "reliability.md"))
    parser.add_argument("--benchmarks", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--no-write", action="store_true", help="print the figures only")
    args = parser.parse_args(argv)
    if args.minutes <= 0:
        parser.error("--minutes must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    return Soak(parse_args(argv)).run()


if __name__ == "__main__":
    sys.exit(main())
