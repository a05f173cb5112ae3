"""Helpers of the tutorial tests: a private copy of the demo stack and ways to read both of its sides.

:func:`start_stack` runs the very script ``make demo`` runs (``examples/tutorial/scripts/demo.py``) on free
ports, with temporary ``AIRFLOW_HOME``/``DAGSTER_HOME``/output directories, a 5 s sensor interval and its own
copy of the raw CSV (so a test can take it away to make the DAG fail).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import httpx
import pytest

from devtools.airflow_stack import ROOT, free_port, port_is_listening, session_pids

EXAMPLE_DIR = ROOT / "examples" / "tutorial"
SCRIPTS_DIR = EXAMPLE_DIR / "scripts"
DEFS_FILE = EXAMPLE_DIR / "dagster_defs" / "peer_with_check.py"
PYTHON = ROOT / ".venv" / "bin" / "python"

# The tests read Dagster through the same small GraphQL client the example's scripts use.
sys.path.insert(0, str(SCRIPTS_DIR))
from dagster_status import CheckExecution, DagsterStatus, Materialization  # noqa: E402

DAG_ID = "rebuild_customers_list"
ASSET_KEY = ("airflow_instance_one", "dag", DAG_ID)
USER_CHECK = "customers_csv_has_rows"
RUN_STATUS_CHECK = "airflow_run_status"
SENSOR = "airflow_instance_one__airflow_dag_runs"
LOCATION = DEFS_FILE.name
SENSOR_INTERVAL_SECONDS = 5
READY_MARKER = "demo ready:"

T = TypeVar("T")


def wait_for(
    what: str, probe: Callable[[], T | None], timeout: float, interval: float = 1.0, context: str = ""
) -> T:
    """Call ``probe`` until it returns something other than None/False; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = probe()
            if value is not None and value is not False:
                return value
        except (httpx.HTTPError, RuntimeError) as exc:  # a busy server: retry until the deadline
            last_error = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}{detail}\n{context}", pytrace=False)
        time.sleep(interval)


@dataclass
class TutorialStack:
    """One running demo: its process, URLs, directories and what it printed."""

    process: subprocess.Popen[str]
    airflow_port: int
    dagster_port: int
    base: Path
    raw_csv: Path
    output: list[str] = field(default_factory=list, repr=False)
    sessions: list[int] = field(default_factory=list)
    # The Dagster definitions the demo loads (demo.py --defs): a stage of the tutorial.
    defs_file: Path = DEFS_FILE
    # Not in the repr: a failing assertion prints the stack, and tokens do not belong in test logs.
    _token: str | None = field(default=None, repr=False)

    @property
    def airflow_url(self) -> str:
        return f"http://127.0.0.1:{self.airflow_port}"

    @property
    def dagster_url(self) -> str:
        return f"http://127.0.0.1:{self.dagster_port}"

    @property
    def asset_url(self) -> str:
        return f"{self.dagster_url}/assets/{'/'.join(ASSET_KEY)}"

    @property
    def airflow_home(self) -> Path:
        return self.base / "airflow_home"

    @property
    def dagster_home(self) -> Path:
        return self.base / "dagster_home"

    @property
    def output_dir(self) -> Path:
        return self.base / "out"

    @property
    def customers_csv(self) -> Path:
        return self.output_dir / "customers.csv"

    def log_tail(self, lines: int = 40) -> str:
        """The end of the demo's output, for failure messages."""
        return "\n".join(self.output[-lines:])

    def env(self) -> dict[str, str]:
        """The environment `make run-dag` / `make clean` would give their commands for this stack."""
        return {
            **os.environ,
            "AIRFLOW_URL": self.airflow_url,
            "DAGSTER_URL": self.dagster_url,
            "AIRFLOW_USERNAME": "admin",
            "AIRFLOW_PASSWORD": "admin",
            "DAGSTER_HOME": str(self.dagster_home),
            "TUTORIAL_EXAMPLE_DIR": str(EXAMPLE_DIR),
            "TUTORIAL_OUTPUT_DIR": str(self.output_dir),
        }

    # -- Airflow, straight through its REST API (v2) -----------------------------------------------------

    def airflow(self) -> httpx.Client:
        """An authenticated client of Airflow's REST API."""
        if self._token is None:
            response = httpx.post(
                f"{self.airflow_url}/auth/token", json={"username": "admin", "password": "admin"}, timeout=30
            )
            response.raise_for_status()
            self._token = str(response.json()["access_token"])
        return httpx.Client(
            base_url=f"{self.airflow_url}/api/v2",
            headers={"Authorization": f"Bearer {self._token}"},
            timeout=30,
        )

    def trigger_dag(self) -> str:
        """Trigger a manual run of the tutorial DAG; return its run id."""
        with self.airflow() as http:
            response = http.post(f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": {}})
        assert response.status_code == 200, response.text
        return str(response.json()["dag_run_id"])

    def wait_for_dag_run(self, run_id: str, timeout: float = 300) -> str:
        """Wait until the run has ended; return "success" or "failed"."""

        def state() -> str | None:
            with self.airflow() as http:
                response = http.get(f"/dags/{DAG_ID}/dagRuns/{run_id}")
            response.raise_for_status()
            value = str(response.json()["state"])
            return value if value in ("success", "failed") else None

        return wait_for(f"Airflow run {run_id} to end", state, timeout, context=self.log_tail())

    def airflow_run_ids(self) -> list[str]:
        """Every run of the tutorial DAG Airflow knows."""
        with self.airflow() as http:
            response = http.get(f"/dags/{DAG_ID}/dagRuns", params={"limit": 100})
        response.raise_for_status()
        return [run["dag_run_id"] for run in response.json()["dag_runs"]]

    # -- Dagster, through GraphQL ---------------------------------------------------------------------------

    def dagster(self) -> DagsterStatus:
        return DagsterStatus(self.dagster_url, timeout=30)

    def wait_for_materialization(self, airflow_run_id: str, timeout: float = 180) -> Materialization:
        """Wait until Dagster shows the materialization the sensor records for this Airflow run."""

        def probe() -> Materialization | None:
            with self.dagster() as dagster:
                found = [m for m in dagster.materializations(ASSET_KEY) if m.airflow_run_id == airflow_run_id]
            return found[0] if found else None

        return wait_for(f"a materialization for {airflow_run_id}", probe, timeout, context=self.log_tail())

    def wait_for_run_status_check(self, airflow_run_id: str, timeout: float = 180) -> CheckExecution:
        """Wait until Dagster shows the `airflow_run_status` evaluation of this Airflow run."""

        def probe() -> CheckExecution | None:
            with self.dagster() as dagster:
                found = [
                    e
                    for e in dagster.check_executions(ASSET_KEY, RUN_STATUS_CHECK)
                    if e.airflow_run_id == airflow_run_id and e.passed is not None
                ]
            return found[0] if found else None

        return wait_for(f"{RUN_STATUS_CHECK} for {airflow_run_id}", probe, timeout, context=self.log_tail())

    def user_check_run_ids(self) -> set[str]:
        """The Dagster runs that executed the user check so far."""
        with self.dagster() as dagster:
            return {e.dagster_run_id for e in dagster.check_executions(ASSET_KEY, USER_CHECK)}

    def wait_for_new_user_check(self, known_run_ids: set[str], timeout: float = 180) -> CheckExecution:
        """Wait until an execution of the user check outside ``known_run_ids`` has a result."""

        def probe() -> CheckExecution | None:
            with self.dagster() as dagster:
                new = [
                    e
                    for e in dagster.check_executions(ASSET_KEY, USER_CHECK)
                    if e.dagster_run_id not in known_run_ids and e.passed is not None
                ]
            return new[0] if new else None

        return wait_for(f"a new evaluation of {USER_CHECK}", probe, timeout, context=self.log_tail())

    def run_user_check(self, timeout: float = 180) -> CheckExecution:
        """Execute the user check alone (as its Execute button in the UI does) and return its result."""
        with self.dagster() as dagster:
            run_id = dagster.execute_checks(LOCATION, ASSET_KEY, [USER_CHECK])

        def probe() -> CheckExecution | None:
            with self.dagster() as dagster:
                mine = [
                    e
                    for e in dagster.check_executions(ASSET_KEY, USER_CHECK)
                    if e.dagster_run_id == run_id and e.passed is not None
                ]
            return mine[0] if mine else None

        return wait_for(f"{USER_CHECK} in Dagster run {run_id}", probe, timeout, context=self.log_tail())

    def ensure_success_recorded(self) -> str:
        """Make sure Dagster shows a successful Airflow run with a passing user check; return the run id."""
        known = self.user_check_run_ids()
        run_id = self.trigger_dag()
        assert self.wait_for_dag_run(run_id) == "success", self.log_tail()
        self.wait_for_materialization(run_id)
        check = self.wait_for_new_user_check(known)
        assert check.passed, check
        return run_id

    # -- lifecycle ------------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def descendants(self) -> list[int]:
        """Live processes in the sessions of the demo and of everything it started."""
        return session_pids([self.process.pid, *self.sessions])

    def stop(self, timeout: float = 180) -> int:
        """Ctrl-C the demo (SIGINT to its process, as a terminal would) and wait for it; return its status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the demo did not stop within {timeout} s\n{self.log_tail()}", pytrace=False)

    def kill(self) -> None:
        """Last resort when a test failed half-way: nothing may outlive the session."""
        for pid in self.descendants():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self.process.kill()
        self.process.wait(timeout=30)


def start_stack(base: Path, defs_file: Path = DEFS_FILE) -> TutorialStack:
    """Start demo.py on free ports under ``base`` with the stage ``defs_file`` and wait for its ready line."""
    base.mkdir(parents=True, exist_ok=True)
    raw_csv = base / "raw" / "raw_customers.csv"
    raw_csv.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLE_DIR / "data" / "raw_customers.csv", raw_csv)
    # Free ports unless told otherwise: `make screenshots` asks for the demo's usual ones, so that the URLs in
    # the documentation's images are the ones the README mentions.
    airflow_port = int(os.environ.get("TUTORIAL_TEST_AIRFLOW_PORT") or free_port())
    dagster_port = int(os.environ.get("TUTORIAL_TEST_DAGSTER_PORT") or free_port())
    while dagster_port == airflow_port:
        dagster_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "DAGSTER", "TUTORIAL"))}
    env["TUTORIAL_RAW_CUSTOMERS_CSV"] = str(raw_csv)
    # The migrate stage's proxied state: a copy the test may edit (every task `proxied: false`, as committed).
    shutil.copytree(
        EXAMPLE_DIR / "airflow_dags" / "proxied_state", base / "proxied_state", dirs_exist_ok=True
    )
    env["TUTORIAL_PROXIED_STATE_DIR"] = str(base / "proxied_state")
    command = [
        str(PYTHON),
        str(SCRIPTS_DIR / "demo.py"),
        "--airflow-port",
        str(airflow_port),
        "--dagster-port",
        str(dagster_port),
        "--airflow-home",
        str(base / "airflow_home"),
        "--dagster-home",
        str(base / "dagster_home"),
        "--output-dir",
        str(base / "out"),
        "--sensor-interval",
        str(SENSOR_INTERVAL_SECONDS),
        "--defs",
        str(defs_file),
    ]
    process = subprocess.Popen(
        command,
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        # Its own session, like a terminal's foreground job: only the SIGINT the test sends reaches it.
        start_new_session=True,
    )
    stack = TutorialStack(process, airflow_port, dagster_port, base, raw_csv, defs_file=defs_file)
    ready = threading.Event()

    def read_output() -> None:
        assert process.stdout is not None
        with (base / "demo.log").open("w") as log:
            for line in process.stdout:
                stack.output.append(line.rstrip("\n"))
                log.write(line)
                log.flush()
                if line.startswith(READY_MARKER):
                    sessions = line.split("sessions=", 1)[1].split()[0]
                    stack.sessions = [int(s) for s in sessions.split(",") if s]
                    ready.set()

    threading.Thread(target=read_output, name="demo-output", daemon=True).start()
    deadline = time.monotonic() + 420
    while not ready.wait(timeout=0.5):
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                stack.kill()
            pytest.fail(f"the demo did not become ready:\n{stack.log_tail(80)}", pytrace=False)
    return stack


class TutorialStackManager:
    """Hands out the running stack, starting a new one when the previous was stopped by a test."""

    def __init__(self, base: Path) -> None:
        self._base = base
        self._count = 0
        self.stack: TutorialStack | None = None

    def get(self, defs_file: Path = DEFS_FILE) -> TutorialStack:
        """The running stack if it loads ``defs_file``; else the running one is stopped and a new one started."""
        if self.stack is not None and self.stack.running and self.stack.defs_file != defs_file:
            # One stack at a time: the machine is shared, and the tests may ask for the demo's fixed ports.
            self.close()
        if self.stack is None or not self.stack.running:
            self._count += 1
            self.stack = start_stack(self._base / f"stack{self._count}", defs_file)
        return self.stack

    def close(self) -> None:
        stack = self.stack
        if stack is not None and stack.running:
            stack.stop()
        if stack is not None and stack.descendants():
            stack.kill()


def ports_free(*ports: int) -> bool:
    """True when nothing listens on any of the ports."""
    return not any(port_is_listening(port) for port in ports)


def import_stage(path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> ModuleType:
    """Import a stage's definitions file as `dagster dev -f` would, with the tutorial's variables pointing
    into `tmp_path` (so the snapshot of Airflow goes to a `DAGSTER_HOME` of its own, not the running demo's)
    and `env` set as well (the Airflow URL and login, for a stage that reads Airflow when it loads)."""
    for name, value in {
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "TUTORIAL_EXAMPLE_DIR": str(EXAMPLE_DIR),
        "TUTORIAL_OUTPUT_DIR": str(tmp_path / "out"),
        **env,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TUTORIAL_DBT_PROJECT_DIR", raising=False)
    spec = importlib.util.spec_from_file_location(f"tutorial_stage_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module
