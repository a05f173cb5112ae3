"""Drive an adapter process (see :mod:`benchmarks.adapter_common`) from the orchestrator, with time caps."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent


class AdapterError(RuntimeError):
    """The adapter reported an exception, or died."""


class AdapterTimeout(RuntimeError):
    """The command did not finish within its cap; the adapter was killed. Progress lines are kept."""

    def __init__(self, message: str, progress: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.progress = progress


@dataclass
class AdapterProcess:
    """One adapter subprocess: ``library`` is "airpeer" or "airlift", ``python`` its venv's interpreter."""

    library: str
    python: Path
    log_path: Path
    env: dict[str, str] | None = None
    _popen: subprocess.Popen[str] | None = field(default=None, init=False)
    _lines: queue.Queue[str | None] = field(default_factory=queue.Queue, init=False)
    _log: IO[str] | None = field(default=None, init=False)
    _init_params: dict[str, Any] | None = field(default=None, init=False)

    def start(self) -> None:
        script = HERE / f"adapter_{self.library}.py"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("a")
        env = dict(os.environ if self.env is None else self.env)
        # Keep the adapters off Airflow's settings, and quiet.
        for key in [k for k in env if k.startswith("AIRFLOW")]:
            env.pop(key)
        env.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
        self._popen = subprocess.Popen(
            [str(self.python), str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
            # Own session: a time cap can kill the adapter and anything it started.
            start_new_session=True,
        )
        stdout = self._popen.stdout
        assert stdout is not None

        def pump() -> None:
            for line in stdout:
                self._lines.put(line)
            self._lines.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def call(self, cmd: str, cap_s: float | None = None, **params: Any) -> Any:
        """Send one command and return its result; kill the adapter when ``cap_s`` seconds pass first."""
        if self._popen is None or self._popen.poll() is not None:
            self.start()
            # A restarted adapter (after a time cap) is initialised again with the same instance.
            if cmd != "init" and self._init_params is not None:
                self.call("init", cap_s=120, **self._init_params)
        if cmd == "init":
            self._init_params = dict(params)
        assert self._popen is not None and self._popen.stdin is not None
        self._popen.stdin.write(json.dumps({"cmd": cmd, **params}) + "\n")
        self._popen.stdin.flush()
        deadline = None if cap_s is None else time.monotonic() + cap_s
        progress: list[dict[str, Any]] = []
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                self.kill()
                raise AdapterTimeout(
                    f"{self.library} {cmd}: did not finish in {cap_s:.0f} s", progress
                ) from None
            if line is None:
                self.kill()
                raise AdapterError(f"{self.library} adapter exited during {cmd}; see {self.log_path}")
            message = json.loads(line)
            if "progress" in message:
                progress.append(message["progress"])
            elif "error" in message:
                raise AdapterError(f"{self.library} {cmd} failed:\n{message['error']}")
            else:
                return message["result"]

    def kill(self) -> None:
        """Kill the adapter's session and reap it; the next call starts a fresh adapter (state is lost)."""
        if self._popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(timeout=10)
        self._popen = None
        self._lines = queue.Queue()

    def close(self) -> None:
        """Ask the adapter to quit, then make sure it is gone."""
        if self._popen is not None and self._popen.poll() is None:
            with contextlib.suppress(AdapterError, AdapterTimeout, BrokenPipeError, OSError):
                self.call("quit", cap_s=10)
            # Let it clean up its scratch directory and exit on its own; kill() is for what does not.
            if self._popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._popen.wait(timeout=10)
        self.kill()
        if self._log is not None:
            self._log.close()
            self._log = None
