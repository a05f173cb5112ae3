"""A real `dagster dev` on 127.0.0.1 for tests and benchmarks that need its webserver and daemon.

`dagster dev` runs in its own process group (it starts a webserver, a daemon and code servers), so stopping it
stops them all. Readiness is polled over its GraphQL: the code location is loaded, not only the port open.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from devtools.airflow_stack import ROOT, free_port

__all__ = [
    "DagsterDev",
    "DagsterDevError",
    "dagster_dev",
    "init_dagster_home",
    "stop_process_group",
    "wait_for",
]

_LOCATION = (
    "{ workspaceOrError { ... on Workspace { locationEntries { locationOrLoadError { __typename } } } } }"
)
_POLL_SECONDS = 0.5
_LOG_TAIL_CHARS = 3000


class DagsterDevError(RuntimeError):
    """`dagster dev` exited, failed to load its code location, or did not get ready in time."""


def wait_for(predicate: Callable[[], Any], what: str, timeout: float) -> Any:
    """Poll until `predicate()` is truthy and return its value; TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(_POLL_SECONDS)


def stop_process_group(process: subprocess.Popen[bytes], grace: float = 30) -> None:
    """SIGTERM the process group of `process` (started with a new session), SIGKILL it after `grace` s."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def init_dagster_home(home: Path) -> None:
    """Create the SQLite storages of the DAGSTER_HOME `home` (its dagster.yaml written) in this process.

    Call it before any Dagster process starts on a new home. The first process to open a storage creates it,
    and a `dagster-daemon` and its code server opening a new home at the same moment can both stamp the
    schedule database's `alembic_version`; from then on every process fails with "Version table
    'alembic_version' has more than one head present" (seen in CI, in a daemon test on a loaded machine).
    """
    import dagster as dg  # here, not at the top: the Airflow helpers of devtools need no Dagster

    with dg.DagsterInstance.from_config(str(home)):
        pass


class DagsterDev:
    """A started `dagster dev -f <defs>` with its home, URL and log (see :func:`dagster_dev`)."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, home: Path, log: Path) -> None:
        self.process = process
        self.url = url
        self.home = home
        self.log = log

    def log_tail(self) -> str:
        """The end of its log (stderr), for error messages."""
        return self.log.read_text(errors="replace")[-_LOG_TAIL_CHARS:] if self.log.exists() else ""

    def loaded(self) -> bool:
        """Whether its one code location has loaded; DagsterDevError if it exited or failed to load."""
        if self.process.poll() is not None:
            raise DagsterDevError(f"dagster dev exited with {self.process.returncode}:\n{self.log_tail()}")
        try:
            answer = httpx.post(f"{self.url}/graphql", json={"query": _LOCATION}, timeout=5)
        except httpx.TransportError:
            return False
        if answer.status_code != 200:
            return False
        entries = answer.json()["data"]["workspaceOrError"]["locationEntries"]
        kinds = [(e["locationOrLoadError"] or {}).get("__typename") for e in entries]
        if "PythonError" in kinds:
            raise DagsterDevError(f"dagster dev could not load the code location:\n{self.log_tail()}")
        return kinds == ["RepositoryLocation"]


@contextlib.contextmanager
def dagster_dev(
    work: Path,
    defs_file: Path,
    env: Mapping[str, str] | None = None,
    *,
    port: int | None = None,
    dequeue_interval_seconds: int | None = 1,
    timeout: float = 300,
) -> Iterator[DagsterDev]:
    """Run `dagster dev -f defs_file` from `work` until the block ends, once its code location has loaded.

    Its DAGSTER_HOME is `work/dagster_home` (telemetry off; with `dequeue_interval_seconds`, the daemon
    dequeues queued runs that often instead of every 5 s, which a proxied task waits on). Airflow's variables
    of the calling environment are dropped, `src/` is on PYTHONPATH and `env` is added. The log is
    `work/dagster.log`. `port` defaults to a free one (pass one when Airflow must know the URL first).
    """
    home = work / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    config = "telemetry:\n  enabled: false\n"
    if dequeue_interval_seconds is not None:
        config += (
            "run_coordinator:\n  module: dagster._core.run_coordinator\n  class: QueuedRunCoordinator\n"
            f"  config:\n    dequeue_interval_seconds: {dequeue_interval_seconds}\n"
        )
    (home / "dagster.yaml").write_text(config)
    init_dagster_home(home)
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
        "DAGSTER_HOME": str(home),
        "PYTHONPATH": str(ROOT / "src"),
        **(env or {}),
    }
    port = port or free_port()
    log = work / "dagster.log"
    dagster = Path(sys.executable).parent / "dagster"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [str(dagster), "dev", "-f", str(defs_file), "-h", "127.0.0.1", "-p", str(port)],
            cwd=work,
            env=full_env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    dev = DagsterDev(process, f"http://127.0.0.1:{port}", home, log)
    try:
        wait_for(dev.loaded, f"dagster dev to load {defs_file.name} (log {log})", timeout)
        yield dev
    finally:
        stop_process_group(process)
