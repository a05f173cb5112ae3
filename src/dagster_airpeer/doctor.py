"""`airpeer doctor`: check every peered Airflow instance of a code location, one line per check.

For each instance, in this order (each check runs whatever the others found):

| check | what it does | warn | fail |
|---|---|---|---|
| `airflow` | reachability and the Airflow version (health endpoint, or the `api_version=` given) | | unreachable, not Airflow |
| `login` | one authenticated request (one finished run, `limit=1`) | | credentials refused |
| `clock` | Airflow's HTTP `Date` against this machine's clock | skew > `CLOCK_SKEW_WARN_SECONDS` | |
| `dags` | the DAG count and how many the definitions peer (`dag_selector_fn` applied) | none peered | |
| `run_page` | the time of one page of finished runs at the instance's `page_size` | > `RUN_PAGE_WARN_SECONDS` | |
| `sensor` | the sensor's state in the Dagster instance of `$DAGSTER_HOME` and its latest tick | stopped, never ran, no daemon | tick failed, no `DAGSTER_HOME` |
| `cursor` | the feed's watermark and its lag behind Airflow's clock | lag > late-commit window + margin | unreadable |

The checks after `airflow` that need Airflow are reported as `fail` ("not checked") when Airflow did not
answer, instead of each waiting for its own timeouts; `sensor` and `cursor` read only Dagster and always run.
Nothing printed or returned holds a secret: messages come from the REST client, which never includes
credentials, tokens or cookies.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import dagster as dg

from . import _dagster_compat as compat
from .airflow.errors import AirflowAuthError, AirflowConfigError, AirflowError
from .feed import CursorError
from .location import add_location_arguments, load_location_from_args
from .registry import PeeredInstance
from .sensor import SensorCursor

__all__ = [
    "CLOCK_SKEW_WARN_SECONDS",
    "JSON_FORMAT_VERSION",
    "RUN_PAGE_WARN_SECONDS",
    "Finding",
    "add_doctor_parser",
    "check_instance",
    "lag_threshold",
    "run_doctor",
    "run_doctor_command",
]

Status = Literal["ok", "warn", "fail"]
Report = Callable[["Finding"], None]

#: Clock skew above which `clock` warns. Exactly-once does not depend on it (the watermark is moved on
#: Airflow's own clock, docs/cursor.md), but Dagster shows event times on this machine's clock, so a skewed
#: Airflow shifts the delays the UI shows and the first tick's `lookback` window by the skew. 30 s is well
#: above the 1 s resolution of the `Date` header and what NTP leaves.
CLOCK_SKEW_WARN_SECONDS = 30.0
#: One page of finished runs taking longer than this leaves a tick (8 s budget by default) only a few pages:
#: a backlog then drains slowly. Lower `page_size`, or look at Airflow's database.
RUN_PAGE_WARN_SECONDS = 2.0
#: A sensor daemon whose last heartbeat is older than this is taken as not running (it beats every 30 s).
DAEMON_STALE_SECONDS = 120.0
#: The `--json` document's `format` value; bumped only when a field changes meaning or goes away.
JSON_FORMAT_VERSION = 1

CHECKS = ("airflow", "login", "clock", "dags", "run_page", "sensor", "cursor")


@dataclass(frozen=True)
class Finding:
    """The result of one check of one instance."""

    instance: str
    check: str
    status: Status
    #: What was found, in one line.
    found: str
    #: What to do about it (empty when there is nothing to do).
    action: str = ""
    #: The measured values, for `--json` (numbers, strings, booleans, None).
    data: Mapping[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """`ok   instance  check: found (-> what to do)`."""
        todo = f" -> {self.action}" if self.action else ""
        return f"{self.status:<4} {self.instance}  {self.check}: {self.found}{todo}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "check": self.check,
            "status": self.status,
            "found": self.found,
            "action": self.action,
            "data": dict(self.data),
        }


def lag_threshold(peered: PeeredInstance) -> timedelta:
    """The cursor lag above which `cursor` warns: the late-commit window (the watermark trails Airflow's clock
    by it after every tick, by design) plus two sensor intervals and a minute for a tick in flight."""
    return peered.late_commit_window + timedelta(seconds=2 * peered.sensor_minimum_interval_seconds + 60)


def _seconds(delta: timedelta) -> str:
    total = delta.total_seconds()
    if abs(total) < 120:
        return f"{total:.0f} s"
    if abs(total) < 7200:
        return f"{total / 60:.1f} min"
    return f"{total / 3600:.1f} h"


def _iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class _Checker:
    """The checks of one instance; they share what earlier ones learned (whether Airflow answered)."""

    def __init__(
        self,
        peered: PeeredInstance,
        dagster: dg.DagsterInstance | None,
        report: Report,
        *,
        now: Callable[[], datetime],
        timer: Callable[[], float],
    ) -> None:
        self.peered = peered
        self.airflow = peered.instance
        self.name = peered.instance.name
        self.dagster = dagster
        self.report = report
        self.now = now
        self.timer = timer
        self.findings: list[Finding] = []
        self.reachable = False
        self.logged_in = False

    def emit(self, check: str, status: Status, found: str, action: str = "", **data: Any) -> None:
        finding = Finding(self.name, check, status, found, action, data)
        self.findings.append(finding)
        self.report(finding)

    @contextmanager
    def guarded(self, check: str) -> Iterator[None]:
        # A check that raises becomes its own `fail` line; the next checks still run.
        try:
            yield
        except AirflowError as exc:
            self.emit(check, "fail", str(exc), _action_for(exc))
        except Exception as exc:  # an unexpected problem is one line too, never a traceback that stops all
            self.emit(check, "fail", f"{type(exc).__name__}: {exc}", "report this as an airpeer bug")

    def not_checked(self, check: str, because: str) -> None:
        self.emit(check, "fail", f"not checked: {because}", "fix the failure above first")

    def run(self) -> list[Finding]:
        for check in CHECKS:
            with self.guarded(check):
                getattr(self, f"check_{check}")()
        return self.findings

    # -- Airflow --------------------------------------------------------------------------------------------

    def check_airflow(self) -> None:
        override = self.airflow.api_version_override
        api = self.airflow.api_version
        version: str | None = None
        # Airflow answered a refusal (so it is reachable) but wants a login: the `login` check says more.
        with contextlib.suppress(AirflowAuthError):
            version = self.airflow.airflow_version
        self.reachable = True
        how = (
            f"api_version={override!r} set on AirflowInstance (health endpoint not probed)"
            if override is not None
            else "detected from its health endpoint"
        )
        shown = f"Airflow {version}" if version else "Airflow (version not readable without a login)"
        self.emit(
            "airflow", "ok", f"{shown} at {self.airflow.webserver_url}, REST API {api} ({how})",
            url=self.airflow.webserver_url, airflow_version=version, api_version=api,
            api_version_override=override,
        )  # fmt: skip

    def check_login(self) -> None:
        if not self.reachable:
            return self.not_checked("login", "Airflow did not answer")
        since = self.now() - timedelta(days=1)
        self.airflow.list_finished_runs(end_date_gte=since, order_by="-end_date", limit=1)
        self.logged_in = True
        principal = self.airflow.auth_backend.describe_principal()
        self.emit("login", "ok", f"an authenticated request as {principal} was accepted", principal=principal)
        return None

    def check_clock(self) -> None:
        airflow_now = self.airflow.server_time() if self.reachable else None
        if airflow_now is None:
            return self.not_checked("clock", "no answer from Airflow with a Date header")
        skew = airflow_now - self.now()
        seconds = skew.total_seconds()
        data: dict[str, Any] = {
            "skew_seconds": round(seconds, 1),
            "threshold_seconds": CLOCK_SKEW_WARN_SECONDS,
        }
        side = "ahead of" if seconds > 0 else "behind"
        if abs(seconds) > CLOCK_SKEW_WARN_SECONDS:
            self.emit(
                "clock", "warn", f"Airflow's clock is {_seconds(abs(skew))} {side} this machine's",
                "sync both clocks (NTP): runs are still recorded exactly once (the watermark uses Airflow's "
                "clock), but the delays Dagster shows and the first tick's lookback are off by the skew",
                **data,
            )  # fmt: skip
        else:
            self.emit("clock", "ok", f"skew {_seconds(abs(skew))} (Airflow {side} this machine)", **data)
        return None

    def check_dags(self) -> None:
        if not self.logged_in:
            return self.not_checked("dags", "the login did not work")
        dags = self.airflow.list_dags()
        selector = self.peered.dag_selector_fn
        selected = [d for d in dags if selector is None or selector(d)]
        loaded = len(self.peered.asset_keys_by_dag_id)
        new = sorted({d.dag_id for d in selected} - set(self.peered.asset_keys_by_dag_id))
        data: dict[str, Any] = {
            "dags": len(dags),
            "peered": len(selected),
            "peered_at_load": loaded,
            "new_since_load": new,
        }
        found = f"{len(dags)} DAGs in Airflow, {len(selected)} peered"
        if selector is not None:
            found += " (dag_selector_fn applied)"
        if not selected:
            self.emit(
                "dags", "warn", found,
                "no DAG is peered: check dag_selector_fn, and that Airflow's dag-processor has parsed the DAG files",
                **data,
            )  # fmt: skip
        elif new:
            shown = ", ".join(new[:5]) + (f" and {len(new) - 5} more" if len(new) > 5 else "")
            self.emit(
                "dags", "ok", f"{found}; new since the definitions' snapshot: {shown}",
                "reload the code location to give them assets (the sensor records their runs meanwhile)",
                **data,
            )  # fmt: skip
        else:
            self.emit("dags", "ok", found, **data)
        return None

    def check_run_page(self) -> None:
        if not self.logged_in:
            return self.not_checked("run_page", "the login did not work")
        page_size = self.airflow.page_size
        since = self.now() - timedelta(days=1)
        start = self.timer()
        page = self.airflow.list_finished_runs(end_date_gte=since, order_by="end_date", limit=page_size)
        seconds = self.timer() - start
        data: dict[str, Any] = {
            "seconds": round(seconds, 3),
            "runs": len(page.runs),
            "page_size": page_size,
            "threshold_seconds": RUN_PAGE_WARN_SECONDS,
        }
        found = f"one page of finished runs ({len(page.runs)} of page_size {page_size}) in {seconds * 1000:.0f} ms"
        if seconds > RUN_PAGE_WARN_SECONDS:
            self.emit(
                "run_page", "warn", found,
                f"a tick reads few pages at this speed: lower page_size (now {page_size}) or check the load on "
                "Airflow's database and API server",
                **data,
            )  # fmt: skip
        else:
            self.emit("run_page", "ok", found, **data)
        return None

    # -- Dagster --------------------------------------------------------------------------------------------

    def _state(self) -> compat.StoredSensorState | None:
        if self.dagster is None:
            return None
        states = compat.stored_sensor_states(self.dagster, self.peered.sensor_name)
        # One state per code location origin that ever ran the sensor: the one that ticked last is live.
        return max(states, key=lambda s: s.last_started_tick or 0.0, default=None)

    def check_sensor(self) -> None:
        sensor = self.peered.sensor_name
        if self.dagster is None:
            self.emit(
                "sensor", "fail", f"sensor '{sensor}' not checked: DAGSTER_HOME is not set",
                "set DAGSTER_HOME to the directory of the Dagster instance the daemon uses (as for dagster dev)",
            )  # fmt: skip
            return
        state = self._state()
        if state is None:
            self.emit(
                "sensor", "warn", f"sensor '{sensor}' has never run in this Dagster instance",
                "start dagster dev (or dagster-daemon) with this DAGSTER_HOME; the sensor is on by default",
                running=False, ticked=False,
            )  # fmt: skip
            return
        tick = compat.latest_sensor_tick(self.dagster, state)
        beat = compat.latest_sensor_daemon_heartbeat(self.dagster)
        now = time.time()
        data: dict[str, Any] = {
            "running": state.running,
            "last_tick_status": tick.status if tick else None,
            "last_tick_seconds_ago": round(now - tick.timestamp, 1) if tick else None,
            "daemon_heartbeat_seconds_ago": round(now - beat, 1) if beat is not None else None,
        }
        last = f"; last tick {tick.status} {now - tick.timestamp:.0f} s ago" if tick else "; no tick yet"
        if not state.running:
            self.emit(
                "sensor", "warn", f"sensor '{sensor}' is stopped{last}",
                f"start it in the Dagster UI (Automation) or with `dagster sensor start {sensor}`",
                **data,
            )  # fmt: skip
        elif beat is None or now - beat > DAEMON_STALE_SECONDS:
            ago = "never" if beat is None else f"{now - beat:.0f} s ago"
            self.emit(
                "sensor", "warn", f"sensor '{sensor}' is running but the sensor daemon last reported {ago}{last}",
                "start dagster-daemon (dagster dev starts one) with this DAGSTER_HOME",
                **data,
            )  # fmt: skip
        elif tick is not None and tick.status == "failure":
            self.emit(
                "sensor", "fail", f"sensor '{sensor}': its last tick failed: {tick.error}",
                "open the sensor's ticks in the Dagster UI for the whole error",
                **data, error=tick.error,
            )  # fmt: skip
        else:
            self.emit("sensor", "ok", f"sensor '{sensor}' is running{last}", **data)

    def check_cursor(self) -> None:
        sensor = self.peered.sensor_name
        if self.dagster is None:
            self.emit(
                "cursor", "fail", "not checked: DAGSTER_HOME is not set", "set DAGSTER_HOME (see above)"
            )
            return
        state = self._state()
        if state is None or not state.cursor:
            self.emit(
                "cursor", "warn", f"sensor '{sensor}' has no cursor yet (no tick has finished)",
                "wait for the sensor's first tick (it imports the lookback, one day by default)",
            )  # fmt: skip
            return
        try:
            cursor = SensorCursor.from_json(state.cursor)
        except CursorError as exc:
            self.emit(
                "cursor", "fail", f"the cursor of sensor '{sensor}' cannot be read: {exc}",
                "reset the cursor on the sensor's page in the Dagster UI (the next tick imports the lookback again)",
            )  # fmt: skip
            return
        feed = cursor.feed
        airflow_now = self.airflow.server_time() if self.reachable else None
        clock = "Airflow's clock"
        if airflow_now is None:
            airflow_now, clock = self.now(), "this machine's clock (Airflow did not answer)"
        lag = airflow_now - feed.watermark
        limit = lag_threshold(self.peered)
        data: dict[str, Any] = {
            "watermark": _iso(feed.watermark),
            "position": _iso(feed.position),
            "lag_seconds": round(lag.total_seconds(), 1),
            "threshold_seconds": limit.total_seconds(),
            "late_commit_window_seconds": self.peered.late_commit_window.total_seconds(),
            "dags_with_status": len(cursor.status),
            "failing": sorted(d for d, ok in cursor.status.items() if not ok),
        }
        found = (
            f"watermark {_iso(feed.watermark)}, {_seconds(lag)} behind {clock} (late-commit window "
            f"{_seconds(self.peered.late_commit_window)}); {len(cursor.status)} DAGs with a recorded run"
        )
        if lag > limit:
            self.emit(
                "cursor", "warn", found,
                f"the sensor is more than {_seconds(limit)} behind: look at its latest ticks in the Dagster UI "
                "(errors, a time budget too small for the backlog); it catches up max_runs_per_tick runs a tick",
                **data,
            )  # fmt: skip
        else:
            self.emit("cursor", "ok", found, **data)


def _action_for(exc: AirflowError) -> str:
    if isinstance(exc, AirflowAuthError):
        return "check the credentials given to the auth backend"
    if isinstance(exc, AirflowConfigError):
        return "fix the setting named above"
    return "check that Airflow is up and that webserver_url is its base URL"


def check_instance(
    peered: PeeredInstance,
    dagster: dg.DagsterInstance | None,
    report: Report = lambda _: None,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    timer: Callable[[], float] = time.perf_counter,
) -> list[Finding]:
    """Run every check on one peered instance; `dagster` is the instance whose sensor state is read (None: not
    known, the sensor checks fail). Each finding goes to `report` as soon as it is known."""
    return _Checker(peered, dagster, report, now=now, timer=timer).run()


def run_doctor(
    peered: Sequence[PeeredInstance],
    dagster: dg.DagsterInstance | None,
    report: Report = lambda _: None,
    progress: Callable[[str], None] = lambda _: None,
) -> list[Finding]:
    """Check every peered instance, one after the other; `progress` hears of each instance as it starts."""
    findings: list[Finding] = []
    for index, entry in enumerate(peered, start=1):
        progress(f"checking {entry.instance.name} ({entry.instance.webserver_url}) [{index}/{len(peered)}]")
        findings.extend(check_instance(entry, dagster, report))
    return findings


def summary(findings: Sequence[Finding]) -> dict[str, int]:
    return {status: sum(1 for f in findings if f.status == status) for status in ("ok", "warn", "fail")}


def to_json(origin: str, findings: Sequence[Finding]) -> dict[str, Any]:
    """The `--json` document (README "Commands" documents it)."""
    counts = summary(findings)
    return {
        "format": JSON_FORMAT_VERSION,
        "location": origin,
        "ok": counts["fail"] == 0,
        "counts": counts,
        "instances": list(dict.fromkeys(f.instance for f in findings)),
        "checks": [f.to_dict() for f in findings],
    }


# -- command line -----------------------------------------------------------------------------------------------


def add_doctor_parser(sub: Any) -> argparse.ArgumentParser:
    """Add `airpeer doctor` to the subparsers of the `airpeer` command."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "doctor",
        help="check every peered Airflow instance (reachability, login, clock, DAGs, sensor and cursor)",
        description=(
            "Imports the code location (as dagster dev -f/-m) and checks each Airflow instance it peers: "
            "reachability and version, the login, clock skew, the DAG count and how many are peered, the time "
            "of one page of runs, and the sensor's status, cursor and lag in the Dagster instance of "
            "$DAGSTER_HOME. One line per check: ok, warn or fail, what was found and what to do. Exit status 1 "
            "when a check fails."
        ),
    )
    add_location_arguments(parser)
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document (progress goes to stderr)"
    )
    return parser


def run_doctor_command(args: argparse.Namespace) -> int:
    """`airpeer doctor`: print the findings; 1 if a check failed, else 0."""
    as_json = bool(args.json)

    def say(line: str) -> None:
        print(f"airpeer doctor: {line}", file=sys.stderr if as_json else sys.stdout, flush=True)

    loaded = load_location_from_args(args)
    home = os.environ.get("DAGSTER_HOME")
    dagster = dg.DagsterInstance.get() if home else None
    try:
        findings = run_doctor(
            loaded.peered,
            dagster,
            report=(lambda _: None) if as_json else (lambda f: print(f.line(), flush=True)),
            progress=say,
        )
    finally:
        if dagster is not None:
            dagster.dispose()
    counts = summary(findings)
    if as_json:
        print(json.dumps(to_json(loaded.origin, findings), indent=2))
    else:
        say(f"{counts['ok']} ok, {counts['warn']} warn, {counts['fail']} fail")
    return 1 if counts["fail"] else 0
