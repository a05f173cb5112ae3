"""`make demo`: run the tutorial's Airflow 3.3 and the peered Dagster code location until Ctrl-C.

Starts, in this order and each in its own process session:

1. Airflow 3.3 (``api-server``, ``scheduler``, ``dag-processor``; SQLite, LocalExecutor) on 127.0.0.1 with the
   DAG folder ``examples/tutorial/airflow_dags`` and ``AIRFLOW_HOME`` in ``examples/tutorial/.airflow_home``;
2. once the DAG ``rebuild_customers_list`` is listed, ``dagster dev -f dagster_defs/peer_with_check.py`` with
   ``DAGSTER_HOME`` in ``examples/tutorial/.dagster_home`` (Dagster reads Airflow when the code location
   loads, so Airflow must answer first).

It prints progress while it waits, then the two URLs, the line ``demo ready: ...`` and the next command; then
it waits. Ctrl-C (or SIGTERM) stops Dagster, then Airflow, and returns once none of the processes it started
is alive and no port they held is listening. If one of them dies on its own, the demo stops the rest and exits
with status 1.

Options default to environment variables (AIRFLOW_PORT, DAGSTER_PORT, AIRFLOW_USERNAME, AIRFLOW_PASSWORD,
TUTORIAL_OUTPUT_DIR, TUTORIAL_SENSOR_INTERVAL_SECONDS), so ``make demo AIRFLOW_PORT=8081`` works; the tests
use the options to run a private copy of the demo on free ports with temporary homes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

EXAMPLE_DIR = Path(__file__).resolve().parent.parent
ROOT = EXAMPLE_DIR.parent.parent
# devtools lives at the repository root, which is not on sys.path when this file runs as a script.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from devtools.airflow_stack import (  # noqa: E402
    AirflowStack,
    AirflowStackError,
    interrupt_on_sigterm,
    port_is_listening,
    session_pids,
)
from devtools.dagster_dev import init_dagster_home  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dagster_status import DagsterStatus  # noqa: E402

DAG_ID = "rebuild_customers_list"
ASSET_KEY = ("airflow_instance_one", "dag", DAG_ID)
SENSOR_NAME = "airflow_instance_one__airflow_dag_runs"
READY_MARKER = "demo ready:"

_DAGSTER_STOP_GRACE_SECONDS = 20.0


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and where the logs are."""


@dataclass(frozen=True)
class DemoConfig:
    """Everything the demo needs to know, resolved from the command line and the environment."""

    airflow_port: int
    dagster_port: int
    username: str
    password: str
    airflow_home: Path
    dagster_home: Path
    output_dir: Path
    defs_file: Path
    sensor_interval: int
    timeout: float

    @property
    def airflow_url(self) -> str:
        """The Airflow UI and REST API."""
        return f"http://127.0.0.1:{self.airflow_port}"

    @property
    def dagster_url(self) -> str:
        """The Dagster UI (and its GraphQL API at /graphql)."""
        return f"http://127.0.0.1:{self.dagster_port}"

    @property
    def asset_url(self) -> str:
        """The peered DAG's asset page in the Dagster UI."""
        return f"{self.dagster_url}/assets/{'/'.join(ASSET_KEY)}"

    def tutorial_env(self) -> dict[str, str]:
        """Variables read by the DAG's tasks and by the Dagster definitions (shared so both see one file)."""
        env = {
            "TUTORIAL_EXAMPLE_DIR": str(EXAMPLE_DIR),
            "TUTORIAL_DBT_PROJECT_DIR": str(EXAMPLE_DIR / "dbt_project"),
            "TUTORIAL_OUTPUT_DIR": str(self.output_dir),
            "TUTORIAL_SENSOR_INTERVAL_SECONDS": str(self.sensor_interval),
            # The migrate stage: where a proxied task finds Dagster, and this Airflow's name in the code
            # location (unused while no task is proxied, as in the earlier stages).
            "AIRPEER_DAGSTER_URL": self.dagster_url,
            "AIRPEER_AIRFLOW_INSTANCE": "airflow_instance_one",
        }
        # Passed through when set: the tests point the DAG at a copy of the raw CSV they can take away, and at
        # a copy of the proxied-state directory they can edit.
        for name in ("TUTORIAL_RAW_CUSTOMERS_CSV", "TUTORIAL_DBT_EXECUTABLE", "TUTORIAL_PROXIED_STATE_DIR"):
            if os.environ.get(name):
                env[name] = os.environ[name]
        return env


class Progress:
    """Prints timestamped progress lines (relative to the demo's start), flushed at once for pipes."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {message}", flush=True)


def write_dagster_yaml(dagster_home: Path) -> None:
    """Make DAGSTER_HOME with telemetry off (no network here, and a demo should not phone home), and its
    storages: on a new home, `dagster dev`'s daemon and code server could race to create them."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    init_dagster_home(dagster_home)


class DagsterDev:
    """``dagster dev`` in its own session, logging to DAGSTER_HOME/logs/dagster-dev.log."""

    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        self.log_path = config.dagster_home / "logs" / "dagster-dev.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    def start(self) -> None:
        """Spawn ``dagster dev`` (returns at once; see :meth:`wait_ready`)."""
        config = self.config
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("ab")
        env = {
            **os.environ,
            **config.tutorial_env(),
            "DAGSTER_HOME": str(config.dagster_home),
            "AIRFLOW_URL": config.airflow_url,
            "AIRFLOW_USERNAME": config.username,
            "AIRFLOW_PASSWORD": config.password,
        }
        dagster = Path(sys.executable).parent / "dagster"
        self.popen = subprocess.Popen(
            [
                str(dagster),
                "dev",
                "-f",
                str(config.defs_file),
                "-h",
                "127.0.0.1",
                "-p",
                str(config.dagster_port),
            ],
            env=env,
            cwd=EXAMPLE_DIR,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            # Own session: the terminal's Ctrl-C reaches only this script, which then stops Dagster in order,
            # and the session id finds every process dagster dev forks (webserver, daemon, code server, runs).
            start_new_session=True,
        )

    @property
    def session_id(self) -> int:
        """The session of ``dagster dev`` and of everything it starts."""
        if self.popen is None:
            raise DemoError("dagster dev is not running")
        return self.popen.pid

    def check_alive(self) -> None:
        """Raise if ``dagster dev`` has exited."""
        if self.popen is not None and self.popen.poll() is not None:
            raise DemoError(
                f"dagster dev exited with {self.popen.returncode}; see {self.log_path}:\n{self.tail()}"
            )

    def tail(self, lines: int = 30) -> str:
        """The end of the log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def wait_ready(self, deadline: float, say: Callable[[str], None]) -> None:
        """Wait until the code location is loaded with the peered asset and the airpeer sensor is running."""
        last_state = ""
        with DagsterStatus(self.config.dagster_url, timeout=5) as status:
            while time.monotonic() < deadline:
                self.check_alive()
                state = "webserver starting"
                try:
                    locations = status.locations()
                except Exception:  # not listening yet, or GraphQL not up: keep waiting
                    locations = None
                if locations is not None:
                    state = "code location loading"
                    for location in locations:
                        if location.error:
                            raise DemoError(
                                f"the Dagster code location failed to load:\n{location.error}\n"
                                f"(log: {self.log_path})"
                            )
                        if location.load_status != "LOADED":
                            continue
                        if list(ASSET_KEY) not in location.asset_keys:
                            raise DemoError(
                                f"the code location loaded without the asset {list(ASSET_KEY)}; "
                                f"assets: {location.asset_keys}"
                            )
                        state = f"sensor {SENSOR_NAME} is {location.sensors.get(SENSOR_NAME, 'missing')}"
                        if location.sensors.get(SENSOR_NAME) == "RUNNING":
                            return
                if state != last_state:
                    say(f"Dagster: {state} ...")
                    last_state = state
                time.sleep(0.5)
        raise DemoError(f"Dagster not ready in time ({last_state}); see {self.log_path}:\n{self.tail()}")

    def stop(self) -> None:
        """SIGINT ``dagster dev`` (it then shuts its services down in order), SIGTERM the session if that is
        not enough, SIGKILL what is left; reap."""
        if self.popen is None:
            return
        session = self.popen.pid
        steps: tuple[tuple[Callable[[int], None], float], ...] = (
            # Only the leader: its children get a shutdown message through their pipes, and a SIGINT of their
            # own would make them race it.
            (lambda pid: os.kill(pid, signal.SIGINT), _DAGSTER_STOP_GRACE_SECONDS),
            (lambda pid: os.killpg(pid, signal.SIGTERM), 5.0),
        )
        for send, grace in steps:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                send(session)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                # Reap the leader first: an unreaped leader is a zombie and never leaves the session.
                self.popen.poll()
                if not session_pids([session]):
                    break
                time.sleep(0.1)
            else:
                continue
            break
        for pid in session_pids([session]):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)
        deadline = time.monotonic() + 5
        while session_pids([session]) and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._log_file is not None:
            self._log_file.close()
        self.popen = None


def run_demo(config: DemoConfig) -> int:
    """Start both systems, wait for Ctrl-C, stop both; return the exit status."""
    say = Progress()
    busy = [port for port in (config.airflow_port, config.dagster_port) if port_is_listening(port)]
    if busy:
        print(
            f"error: port(s) {', '.join(map(str, busy))} already in use (another `make demo`?). "
            "Stop it, or pick other ports: make demo AIRFLOW_PORT=8081 DAGSTER_PORT=3001",
            file=sys.stderr,
        )
        return 1
    config.airflow_home.mkdir(parents=True, exist_ok=True)
    config.output_dir.mkdir(parents=True, exist_ok=True)
    write_dagster_yaml(config.dagster_home)

    airflow = AirflowStack(
        major=3,
        home=config.airflow_home,
        dags_folder=EXAMPLE_DIR / "airflow_dags",
        port=config.airflow_port,
        username=config.username,
        password=config.password,
        dags_paused_at_creation=False,
        extra_env={
            **config.tutorial_env(),
            # The DAG is daily with catchup off, so Airflow would start the latest interval's run as soon as
            # it sees the DAG, and again after every `make clean`. In the demo only the runs you trigger run.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        },
    )
    dagster = DagsterDev(config)
    deadline = time.monotonic() + config.timeout
    status = 0
    # Explicitly: a shell that starts us in the background hands down SIGINT ignored, and children would
    # inherit that too (dagster dev then ignores the SIGINT that asks it to stop).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with interrupt_on_sigterm():
        try:
            airflow.start(timeout=config.timeout, progress=say)
            say(f"Airflow 3.3: waiting for the DAG {DAG_ID} to be parsed ...")
            airflow.wait_for_dags([DAG_ID], timeout=max(1.0, deadline - time.monotonic()))
            say(f"Dagster: starting dagster dev -f {config.defs_file.name} on {config.dagster_url} ...")
            dagster.start()
            dagster.wait_ready(deadline, say)
            say("both are up")
            print_banner(config, airflow)
            # One machine-readable line for the tests: the process sessions let them check nothing survives.
            sessions = [*airflow.session_ids(), dagster.session_id]
            print(
                f"{READY_MARKER} airflow={config.airflow_url} dagster={config.dagster_url} "
                f"sessions={','.join(map(str, sessions))}",
                flush=True,
            )
            while True:
                # Raises AirflowStackError with the log tail if an Airflow process died.
                airflow.check_alive()
                dagster.check_alive()
                time.sleep(1)
        except KeyboardInterrupt:
            print(flush=True)
            say("Ctrl-C: stopping ...")
        except (AirflowStackError, DemoError) as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            status = 1
        finally:
            # A second Ctrl-C must not cut the shutdown short and leave processes behind.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            stop_all(config, airflow, dagster, say)
            signal.signal(signal.SIGINT, signal.default_int_handler)
    return status


def stop_all(
    config: DemoConfig, airflow: AirflowStack, dagster: DagsterDev, say: Callable[[str], None]
) -> None:
    """Stop Dagster first (its sensor would only log errors against a stopped Airflow), then Airflow."""
    say("stopping Dagster ...")
    dagster.stop()
    say("stopping Airflow ...")
    airflow.stop()
    # Belt and braces: report (not hide) anything still holding the demo's ports.
    held = [port for port in (config.airflow_port, config.dagster_port) if port_is_listening(port)]
    if held:
        say(f"warning: port(s) {held} still listening after the stop")
    else:
        say("stopped; no process left and ports free")


def print_banner(config: DemoConfig, airflow: AirflowStack) -> None:
    """The two URLs, the credentials and what to do next."""
    logs = ", ".join(str(p) for p in airflow.log_paths().values() if p.exists())
    # The demo's well-known default may be shown; a password the user chose is not echoed.
    password_hint = "password admin" if config.password == "admin" else "password from AIRFLOW_PASSWORD"
    print(
        "\n"
        f"  Airflow 3.3  {config.airflow_url}   (log in as {config.username}, {password_hint})\n"
        f"  Dagster      {config.dagster_url}\n"
        f"  The peered DAG in Dagster: {config.asset_url}\n"
        "\n"
        "  Next, in another shell:  make run-dag   (triggers rebuild_customers_list and waits for it)\n"
        "  Then:                    make clean     (deletes the DAG's runs and the asset's history)\n"
        "  Ctrl-C here stops both.\n"
        f"  Logs: {config.dagster_home / 'logs' / 'dagster-dev.log'}; Airflow: {logs}\n",
        flush=True,
    )


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def parse_args(argv: list[str] | None = None) -> DemoConfig:
    """Resolve the configuration: options first, then environment variables, then defaults."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--airflow-port", type=int, default=_env_int("AIRFLOW_PORT", 8080))
    parser.add_argument("--dagster-port", type=int, default=_env_int("DAGSTER_PORT", 3000))
    parser.add_argument("--username", default=os.environ.get("AIRFLOW_USERNAME") or "admin")
    parser.add_argument("--password", default=os.environ.get("AIRFLOW_PASSWORD") or "admin")
    parser.add_argument("--airflow-home", type=Path, default=EXAMPLE_DIR / ".airflow_home")
    parser.add_argument("--dagster-home", type=Path, default=EXAMPLE_DIR / ".dagster_home")
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path(os.environ.get("TUTORIAL_OUTPUT_DIR") or EXAMPLE_DIR / "data" / "out"),
        help="where the DAG writes its duckdb database and customers.csv",
    )
    parser.add_argument(
        "--defs",
        type=Path,
        default=EXAMPLE_DIR / "dagster_defs" / "peer_with_check.py",
        help="definitions file",
    )
    parser.add_argument(
        "--sensor-interval",
        type=int,
        default=_env_int("TUTORIAL_SENSOR_INTERVAL_SECONDS", 30),
        help="minimum seconds between two ticks of the airpeer sensor (default 30)",
    )
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for both to be ready")
    args = parser.parse_args(argv)
    return DemoConfig(
        airflow_port=args.airflow_port,
        dagster_port=args.dagster_port,
        username=args.username,
        password=args.password,
        airflow_home=args.airflow_home.resolve(),
        dagster_home=args.dagster_home.resolve(),
        output_dir=args.output_dir.resolve(),
        defs_file=args.defs.resolve(),
        sensor_interval=args.sensor_interval,
        timeout=args.timeout,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``make demo``."""
    return run_demo(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
