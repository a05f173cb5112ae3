"""Start and stop a real Apache Airflow 3.3 or 2.11 on 127.0.0.1, for tests, demos and benchmarks.

An :class:`AirflowStack` runs Airflow from the project's virtual environments (``.venv`` holds Airflow 3.3,
``.venvs/airflow2`` holds Airflow 2.11, both made by ``make install``) with a SQLite database under its own
``AIRFLOW_HOME``. Every long-running Airflow process is started in its own session (hence its own process
group), so :meth:`AirflowStack.stop` can terminate it together with everything it forked, and nothing is left
listening once it returns.

Airflow 3.3 runs ``api-server``, ``scheduler --skip-serve-logs`` and ``dag-processor`` with the
LocalExecutor and the SimpleAuthManager (REST API ``/api/v2``, JWT from ``POST /auth/token``).
Airflow 2.11 runs ``webserver`` (gunicorn, one worker) and ``scheduler --skip-serve-logs`` with the
SequentialExecutor, the only one Airflow 2 accepts with SQLite (REST API ``/api/v1``, basic auth).

Library use::

    with AirflowStack(major=3, home=tmp / "af3", dags_folder=Path("tests/dags")) as stack:
        stack.wait_for_dags(["airpeer_ok"])
        run_id = stack.trigger_dag_run("airpeer_ok")
        assert stack.wait_for_dag_run("airpeer_ok", run_id) == "success"

Command line (foreground until SIGINT/SIGTERM)::

    python -m devtools.airflow_stack up --major 3 --home H --dags D --port 8080
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

__all__ = [
    "AIRFLOW2_VENV",
    "AIRFLOW3_VENV",
    "DB_TEMPLATE_DIR",
    "ROOT",
    "AirflowStack",
    "AirflowStackError",
    "free_port",
    "listening_sockets",
    "port_is_listening",
    "session_pids",
]

ROOT = Path(__file__).resolve().parent.parent
"""The repository root (the directory holding the Makefile)."""
AIRFLOW3_VENV = ROOT / ".venv"
"""Virtual environment with Airflow 3.3 (and Dagster, dbt, airpeer)."""
AIRFLOW2_VENV = ROOT / ".venvs" / "airflow2"
"""Virtual environment with Airflow 2.11 only."""
DB_TEMPLATE_DIR = ROOT / ".work" / "airflow-db-templates"
"""Migrated SQLite databases reused by new homes (``airflow db migrate`` takes 3 s on 3.3, 20 s on 2.11)."""

# Fixed secrets: the instances are throwaway and bound to loopback, and fixed keys keep JWTs valid across an
# api-server restart (outage tests) and let several processes of one instance agree without shared state.
_SECRET_KEY = "airpeer-devtools-secret-key-not-for-production"
_JWT_SECRET = "airpeer-devtools-jwt-secret-not-for-production"
_FERNET_KEY = "YWlycGVlci1kZXZ0b29scy1maXhlZC1mZXJuZXQtayE="  # urlsafe base64 of 32 fixed bytes

_HEALTH_POLL_SECONDS = 0.25
_STOP_GRACE_SECONDS = 20.0
_LOG_TAIL_LINES = 60


class AirflowStackError(RuntimeError):
    """Raised when an Airflow instance cannot be set up, started, or does not answer as expected."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now (chosen by the kernel)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """Return (state, session id) of a process from /proc, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may contain spaces: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[3])


def session_pids(session_ids: Iterable[int]) -> list[int]:
    """Return the live (non-zombie) processes belonging to any of the given sessions.

    Airflow's task runners move themselves to their own process groups, but they keep the session of the
    process that started them, so the session is what catches every descendant. Zombies are ignored: they
    hold neither memory nor ports, and an orphaned zombie may wait for a non-reaping init in containers.
    """
    wanted = set(session_ids)
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _proc_stat(int(entry))
        if stat is not None and stat[1] in wanted and stat[0] != "Z":
            found.append(int(entry))
    return found


def _decode_address(hex_address: str) -> tuple[str, int]:
    host_hex, port_hex = hex_address.split(":")
    raw = bytes.fromhex(host_hex)
    # /proc/net/tcp* prints addresses as host-order 32-bit words.
    swapped = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(swapped)
    return str(address), int(port_hex, 16)


def _listening_table() -> list[tuple[str, int, int]]:
    """Return (address, port, socket inode) of every listening TCP socket on the machine."""
    rows: list[tuple[str, int, int]] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                address, port = _decode_address(fields[1])
                rows.append((address, port, int(fields[9])))
    return rows


def port_is_listening(port: int) -> bool:
    """Return True when any process on the machine listens on this TCP port (any address)."""
    return any(p == port for _, p, _ in _listening_table())


def listening_sockets(pids: Iterable[int]) -> list[tuple[str, int]]:
    """Return the (address, port) of every TCP socket the given processes listen on."""
    inodes: set[int] = set()
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, PermissionError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(FileNotFoundError, ProcessLookupError, PermissionError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(int(target[8:-1]))
    return sorted({(address, port) for address, port, inode in _listening_table() if inode in inodes})


@dataclass
class _Process:
    """One long-running Airflow process (the leader of its own session)."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


def _stop_processes(processes: list[_Process], grace: float = _STOP_GRACE_SECONDS) -> None:
    """SIGTERM every process group, wait for the sessions to empty, SIGKILL leftovers, reap the leaders."""
    sessions = [p.popen.pid for p in processes]
    for proc in processes:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.popen.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        # Reap leaders first: an unreaped leader is a zombie that would count as a live group.
        for proc in processes:
            proc.popen.poll()
        if not session_pids(sessions):
            break
        time.sleep(0.1)
    else:
        for pid in session_pids(sessions):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    for proc in processes:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=10)
        proc.log_file.close()
    # SIGKILLed members may take a moment to disappear from /proc.
    deadline = time.monotonic() + 5
    while session_pids(sessions) and time.monotonic() < deadline:
        time.sleep(0.05)


class AirflowStack:
    """A real Airflow 3.3 (``major=3``) or 2.11 (``major=2``) running on 127.0.0.1 with a SQLite database.

    Nothing happens until :meth:`start`; :meth:`stop` (also called on context exit and at interpreter exit)
    terminates every process the stack started. All Airflow commands, including :meth:`cli`, run with
    :attr:`env`, which pins ``AIRFLOW_HOME`` and every setting, so the caller's environment does not leak in.
    """

    def __init__(
        self,
        *,
        major: int,
        home: Path,
        dags_folder: Path,
        port: int | None = None,
        username: str = "admin",
        password: str = "admin",  # noqa: S107 - throwaway loopback instances
        dags_paused_at_creation: bool = False,
        extra_env: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
        use_db_template: bool = True,
    ) -> None:
        """Describe an instance; ``port=None`` picks a free port, ``extra_env`` overrides any setting.

        With ``use_db_template`` a new home gets a copy of a database migrated earlier by the same Airflow
        version (cached in :data:`DB_TEMPLATE_DIR`, made on first use) instead of running the migration.
        """
        if major not in (2, 3):
            raise ValueError(f"major must be 2 or 3, not {major!r}")
        self.major = major
        self.home = Path(home).resolve()
        self.dags_folder = Path(dags_folder).resolve()
        self.port = port if port is not None else free_port()
        self.username = username
        self.password = password
        self.dags_paused_at_creation = dags_paused_at_creation
        self.log_dir = Path(log_dir).resolve() if log_dir is not None else self.home / "logs"
        self.venv = AIRFLOW3_VENV if major == 3 else AIRFLOW2_VENV
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_url = f"{self.url}/api/v2" if major == 3 else f"{self.url}/api/v1"
        self.env = self._build_env(extra_env or {})
        self.use_db_template = use_db_template
        self._processes: dict[str, _Process] = {}
        self._token: str | None = None
        self._atexit_registered = False

    # ------------------------------------------------------------------ configuration

    @property
    def api_server_name(self) -> str:
        """Name of the process serving the REST API: ``api-server`` (3.x) or ``webserver`` (2.x)."""
        return "api-server" if self.major == 3 else "webserver"

    @property
    def version_label(self) -> str:
        """Human label of the Airflow line, "3.3" or "2.11"."""
        return "3.3" if self.major == 3 else "2.11"

    def python(self) -> Path:
        """Return the interpreter of this Airflow's virtual environment (e.g. for ORM seeding scripts)."""
        return self.venv / "bin" / "python"

    def _airflow_bin(self) -> Path:
        path = self.venv / "bin" / "airflow"
        if not path.exists():
            raise AirflowStackError(
                f"Airflow {self.version_label} is not installed: {path} is missing. Run `make install`."
            )
        return path

    def _build_env(self, extra_env: Mapping[str, str]) -> dict[str, str]:
        # Drop the caller's Airflow settings so a developer's shell cannot change what tests run against.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        venv_bin = str(self.venv / "bin")
        # Airflow 2 runs tasks as `airflow tasks run ...` looked up on PATH: this venv must come first.
        env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
        env["VIRTUAL_ENV"] = str(self.venv)
        env.pop("PYTHONHOME", None)
        env.pop("PYTHONPATH", None)
        paused = "True" if self.dags_paused_at_creation else "False"
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": paused,
                "AIRFLOW__CORE__FERNET_KEY": _FERNET_KEY,
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs" / "tasks"),
                "AIRFLOW__LOGGING__DAG_PROCESSOR_CHILD_PROCESS_LOG_DIRECTORY": str(self.home / "logs" / "dp"),
                "AIRFLOW__SCHEDULER__CHILD_PROCESS_LOG_DIRECTORY": str(self.home / "logs" / "scheduler"),
                # New files are found within 5 s (dir listing), changed files are reparsed at once (mtime
                # sort mode bypasses the interval); unchanged files only every 30 s, to save idle CPU.
                "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "30",
                "AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL": "5",
                "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "5",
                "AIRFLOW__CORE__MIN_SERIALIZED_DAG_FETCH_INTERVAL": "2",
            }
        )
        if self.major == 3:
            env.update(
                {
                    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                    # LocalExecutor forks this many workers up front; 2 cores gain nothing from more.
                    "AIRFLOW__CORE__PARALLELISM": "4",
                    "AIRFLOW__CORE__AUTH_MANAGER": (
                        "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
                    ),
                    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{self.username}:admin",
                    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self._passwords_file()),
                    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
                    "AIRFLOW__API__HOST": "127.0.0.1",
                    "AIRFLOW__API__PORT": str(self.port),
                    "AIRFLOW__API__BASE_URL": self.url,
                    "AIRFLOW__API__WORKERS": "1",
                    "AIRFLOW__API__SECRET_KEY": _SECRET_KEY,
                    "AIRFLOW__API_AUTH__JWT_SECRET": _JWT_SECRET,
                    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
                }
            )
        else:
            env.update(
                {
                    # Airflow 2 refuses any other executor with SQLite.
                    "AIRFLOW__CORE__EXECUTOR": "SequentialExecutor",
                    "AIRFLOW__WEBSERVER__WEB_SERVER_HOST": "127.0.0.1",
                    "AIRFLOW__WEBSERVER__WEB_SERVER_PORT": str(self.port),
                    "AIRFLOW__WEBSERVER__BASE_URL": self.url,
                    "AIRFLOW__WEBSERVER__SECRET_KEY": _SECRET_KEY,
                    # One gunicorn worker and no periodic worker refresh: each worker costs ~300 MB and a
                    # refresh forks a new one every 30 s.
                    "AIRFLOW__WEBSERVER__WORKERS": "1",
                    "AIRFLOW__WEBSERVER__WORKER_REFRESH_INTERVAL": "0",
                    "AIRFLOW__API__AUTH_BACKENDS": (
                        "airflow.api.auth.backend.basic_auth,airflow.api.auth.backend.session"
                    ),
                    "AIRFLOW__WEBSERVER__WARN_DEPLOYMENT_EXPOSURE": "False",
                    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
                }
            )
        env.update(extra_env)
        return env

    def _passwords_file(self) -> Path:
        return self.home / "simple_auth_manager_passwords.json"

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 180, progress: Callable[[str], None] | None = None) -> None:
        """Migrate the database, start every process and wait until the instance reports itself healthy.

        Raises :class:`AirflowStackError` (after stopping whatever was started) with the tail of the relevant
        log when a step fails, a process exits, or the instance is not healthy within ``timeout`` seconds.
        """
        say = progress or (lambda _msg: None)
        if self._processes:
            raise AirflowStackError("this AirflowStack is already started")
        deadline = time.monotonic() + timeout
        airflow = self._airflow_bin()
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.major == 3:
            self._passwords_file().write_text(json.dumps({self.username: self.password}))
        self._register_atexit()
        try:
            self._prepare_database(airflow, deadline, say)
            say(f"Airflow {self.version_label}: starting processes on {self.url} ...")
            for name in self._process_names():
                self._spawn(name)
            self._wait_healthy(deadline, say)
        except BaseException:
            self.stop()
            raise
        say(f"Airflow {self.version_label}: ready at {self.url}")

    def _db_path(self) -> Path:
        return self.home / "airflow.db"

    def _db_template(self) -> Path | None:
        """Return where this version's migrated database is cached, or None when it cannot be cached."""
        if not self.use_db_template:
            return None
        if self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] != f"sqlite:///{self._db_path()}":
            return None  # extra_env points somewhere else: not ours to copy
        site_packages = self.venv.glob("lib/python*/site-packages/apache_airflow*.dist-info")
        dist_infos = sorted(p.name for p in site_packages)
        # The v2 database holds the admin user (hashed password), so the user is part of the key.
        key = hashlib.sha256("\n".join([*dist_infos, self.username, self.password]).encode()).hexdigest()
        return DB_TEMPLATE_DIR / f"airflow{self.major}-{key[:16]}.db"

    def _prepare_database(self, airflow: Path, deadline: float, say: Callable[[str], None]) -> None:
        db_path = self._db_path()
        template = self._db_template()
        if not db_path.exists() and template is not None and template.exists():
            say(f"Airflow {self.version_label}: database copied from {template.name}")
            shutil.copyfile(template, db_path)
            return
        fresh = not db_path.exists()
        say(f"Airflow {self.version_label}: migrating the database in {self.home} ...")
        self._run_logged("db-migrate", [str(airflow), "db", "migrate"], deadline)
        if self.major == 2:
            self._ensure_v2_user(airflow, deadline, check_existing=not fresh)
        if fresh and template is not None:
            template.parent.mkdir(parents=True, exist_ok=True)
            # Write then rename: parallel test sessions may race to create the same template.
            partial = template.with_name(f"{template.name}.{os.getpid()}.tmp")
            shutil.copyfile(db_path, partial)
            os.replace(partial, template)

    def _process_names(self) -> list[str]:
        if self.major == 3:
            return ["api-server", "scheduler", "dag-processor"]
        return ["webserver", "scheduler"]

    def _command(self, name: str) -> list[str]:
        airflow = str(self._airflow_bin())
        if name == "api-server":
            return [airflow, "api-server", "--host", "127.0.0.1", "--port", str(self.port)]
        if name == "webserver":
            pid_file = self.home / "airflow-webserver.pid"
            return [
                airflow,
                "webserver",
                "--hostname",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--pid",
                str(pid_file),
            ]
        if name == "scheduler":
            # Without --skip-serve-logs the scheduler serves task logs on 0.0.0.0:8793.
            return [airflow, "scheduler", "--skip-serve-logs"]
        if name == "dag-processor":
            return [airflow, "dag-processor"]
        raise ValueError(f"unknown Airflow process {name!r}")

    def _spawn(self, name: str) -> None:
        if name == "webserver":
            # A webserver stopped by SIGKILL leaves its pid files. Airflow 2 and gunicorn refuse to start ("already
            # running") when the pid in one is alive, and with pid_max at 32768 a busy machine reuses it soon.
            for pid_file in self.home.glob("airflow-webserver*.pid"):
                pid_file.unlink(missing_ok=True)
        log_path = self.log_dir / f"{name}.log"
        log_file = log_path.open("ab")
        log_file.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {name}\n".encode())
        log_file.flush()
        popen = subprocess.Popen(
            self._command(name),
            env=self.env,
            cwd=self.home,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            # Own session and process group: a terminal's Ctrl-C does not reach it, and stop() can signal
            # the whole group and find every descendant by session id.
            start_new_session=True,
        )
        self._processes[name] = _Process(name, popen, log_path, log_file)

    def _run_logged(self, name: str, args: list[str], deadline: float) -> None:
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as log_file:
            try:
                result = subprocess.run(
                    args,
                    env=self.env,
                    cwd=self.home,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    timeout=max(1.0, deadline - time.monotonic()),
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise AirflowStackError(
                    f"`{' '.join(args[1:])}` timed out; last lines of {log_path}:\n{_tail(log_path)}"
                ) from exc
        if result.returncode != 0:
            raise AirflowStackError(
                f"`airflow {' '.join(args[1:])}` exited with {result.returncode}; "
                f"last lines of {log_path}:\n{_tail(log_path)}"
            )

    def _ensure_v2_user(self, airflow: Path, deadline: float, *, check_existing: bool) -> None:
        # On a restart over an existing home the user may already exist and `users create` would fail.
        if check_existing:
            listing = self.cli("users", "list", "--output", "json", check=False)
            if listing.returncode == 0 and f'"{self.username}"' in listing.stdout:
                return
        self._run_logged(
            "users-create",
            [
                str(airflow),
                "users",
                "create",
                "--username",
                self.username,
                "--password",
                self.password,
                "--role",
                "Admin",
                "--firstname",
                "Air",
                "--lastname",
                "Peer",
                "--email",
                f"{self.username}@example.com",
            ],
            deadline,
        )

    def check_alive(self) -> None:
        """Raise :class:`AirflowStackError` with the log tail if a process of the stack has exited."""
        for proc in self._processes.values():
            code = proc.popen.poll()
            if code is not None:
                raise AirflowStackError(
                    f"Airflow {self.version_label} {proc.name} exited with {code}; "
                    f"last lines of {proc.log_path}:\n{_tail(proc.log_path)}"
                )

    def _health(self) -> dict[str, Any] | None:
        path = "/api/v2/monitor/health" if self.major == 3 else "/api/v1/health"
        try:
            response = httpx.get(self.url + path, timeout=5)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        body: dict[str, Any] = response.json()
        return body

    def _is_healthy(self, body: dict[str, Any]) -> bool:
        components = ["scheduler", "dag_processor"] if self.major == 3 else ["scheduler"]
        return all((body.get(c) or {}).get("status") == "healthy" for c in components)

    def _warm_up_execution_api(self, deadline: float) -> None:
        """Make the 3.x api-server build its execution API now rather than during the first task run.

        The first request under /execution/ takes seconds (versioned routers are built lazily) and blocks
        the single worker, which would stall the first DAG run and every REST call made meanwhile.
        """
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(f"{self.url}/execution/health", timeout=max(1.0, deadline - time.monotonic()))

    def _wait_healthy(self, deadline: float, say: Callable[[str], None]) -> None:
        body: dict[str, Any] | None = None
        announced = False
        while time.monotonic() < deadline:
            self.check_alive()
            body = self._health()
            if body is not None:
                if not announced:
                    say(f"Airflow {self.version_label}: {self.api_server_name} answers, waiting for health")
                    announced = True
                    if self.major == 3:
                        self._warm_up_execution_api(deadline)
                        continue
                if self._is_healthy(body):
                    return
            time.sleep(_HEALTH_POLL_SECONDS)
        tails = "\n".join(
            f"--- last lines of {p.log_path}:\n{_tail(p.log_path, 25)}" for p in self._processes.values()
        )
        raise AirflowStackError(
            f"Airflow {self.version_label} not healthy in time at {self.url} (last health: {body})\n{tails}"
        )

    def stop(self) -> None:
        """Stop every process (SIGTERM each group, then SIGKILL leftovers) and reap them. Idempotent."""
        processes = list(self._processes.values())
        self._processes.clear()
        if processes:
            _stop_processes(processes)

    def stop_api_server(self) -> None:
        """Stop only the process serving the REST API (api-server on 3.x, webserver on 2.x)."""
        proc = self._processes.pop(self.api_server_name, None)
        if proc is not None:
            _stop_processes([proc])

    def start_api_server(self, timeout: float = 120) -> None:
        """Start the REST API process again after :meth:`stop_api_server` and wait until it answers."""
        if self.api_server_name in self._processes:
            return
        self._spawn(self.api_server_name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if self._health() is not None:
                if self.major == 3:
                    self._warm_up_execution_api(deadline)
                return
            time.sleep(_HEALTH_POLL_SECONDS)
        proc = self._processes[self.api_server_name]
        raise AirflowStackError(
            f"{self.api_server_name} did not answer within {timeout} s; last lines of {proc.log_path}:\n"
            f"{_tail(proc.log_path)}"
        )

    def _register_atexit(self) -> None:
        # A crashed test session must not leave Airflow running; a weak reference keeps the stack collectable.
        if self._atexit_registered:
            return
        ref = weakref.ref(self)

        def _stop_at_exit() -> None:
            stack = ref()
            if stack is not None:
                stack.stop()

        atexit.register(_stop_at_exit)
        self._atexit_registered = True

    @property
    def running(self) -> bool:
        """True while processes started by this stack are registered (between start and stop)."""
        return bool(self._processes)

    def pids(self) -> list[int]:
        """Return every live process started by this stack, descendants included."""
        return session_pids(p.popen.pid for p in self._processes.values())

    def session_ids(self) -> list[int]:
        """Return the session ids of the processes currently registered (remember them to check stop())."""
        return [p.popen.pid for p in self._processes.values()]

    def log_paths(self) -> dict[str, Path]:
        """Return the log file of each process, by process name."""
        return {name: self.log_dir / f"{name}.log" for name in [*self._process_names(), "db-migrate"]}

    def __enter__(self) -> AirflowStack:
        """Start the stack (if not started yet) and return it."""
        if not self._processes:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the stack."""
        self.stop()

    def __repr__(self) -> str:
        """Show version, URL and home."""
        return f"AirflowStack(major={self.major}, url={self.url!r}, home={str(self.home)!r})"

    # ------------------------------------------------------------------ commands and REST helpers

    def cli(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run ``airflow ARGS...`` with :attr:`env`; return the completed process (text output captured)."""
        result = subprocess.run(
            [str(self._airflow_bin()), *args],
            env=self.env,
            cwd=self.home,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AirflowStackError(
                f"`airflow {' '.join(args)}` exited with {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def auth_headers(self) -> dict[str, str]:
        """Return the Authorization header for the REST API: a JWT (3.x, cached) or basic auth (2.x)."""
        if self.major == 2:
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            return {"Authorization": f"Basic {token}"}
        if self._token is None:
            response = httpx.post(
                f"{self.url}/auth/token",
                json={"username": self.username, "password": self.password},
                timeout=30,
            )
            if response.status_code not in (200, 201):
                raise AirflowStackError(f"POST /auth/token -> {response.status_code}: {response.text}")
            self._token = str(response.json()["access_token"])
        return {"Authorization": f"Bearer {self._token}"}

    def client(self, timeout: float = 30) -> httpx.Client:
        """Return an httpx client for the REST API (base URL :attr:`api_url`, authenticated)."""
        return httpx.Client(base_url=self.api_url, headers=self.auth_headers(), timeout=timeout)

    def dag_ids(self) -> set[str]:
        """Return the ids of every DAG the REST API lists."""
        found: set[str] = set()
        with self.client() as http:
            offset = 0
            while True:
                response = http.get("/dags", params={"limit": 100, "offset": offset})
                response.raise_for_status()
                page = response.json()
                found.update(d["dag_id"] for d in page["dags"])
                offset += len(page["dags"])
                if not page["dags"] or offset >= page["total_entries"]:
                    return found

    def wait_for_dags(self, dag_ids: Iterable[str], timeout: float = 120) -> None:
        """Wait until the REST API lists every one of ``dag_ids`` (parsed and serialized)."""
        wanted = set(dag_ids)
        deadline = time.monotonic() + timeout
        missing = wanted
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(httpx.HTTPError):
                missing = wanted - self.dag_ids()
                if not missing:
                    return
            time.sleep(0.5)
        raise AirflowStackError(
            f"DAGs {sorted(missing)} not listed by Airflow {self.version_label} within {timeout} s "
            f"(DAGs folder {self.dags_folder})"
        )

    def trigger_dag_run(
        self, dag_id: str, *, run_id: str | None = None, conf: dict[str, Any] | None = None
    ) -> str:
        """Trigger a manual run of ``dag_id`` through the REST API and return its run id."""
        body: dict[str, Any] = {"conf": conf or {}}
        if self.major == 3:
            body["logical_date"] = None
        if run_id is not None:
            body["dag_run_id"] = run_id
        with self.client() as http:
            response = http.post(f"/dags/{_quote(dag_id)}/dagRuns", json=body)
        if response.status_code != 200:
            raise AirflowStackError(f"triggering {dag_id} -> {response.status_code}: {response.text}")
        return str(response.json()["dag_run_id"])

    def dag_run_state(self, dag_id: str, run_id: str) -> str:
        """Return the state of one DAG run ("queued", "running", "success", "failed")."""
        with self.client() as http:
            response = http.get(f"/dags/{_quote(dag_id)}/dagRuns/{_quote(run_id)}")
        response.raise_for_status()
        return str(response.json()["state"])

    def wait_for_dag_run(self, dag_id: str, run_id: str, timeout: float = 120) -> str:
        """Wait until the run is finished and return its final state ("success" or "failed")."""
        deadline = time.monotonic() + timeout
        state = "unknown"
        while time.monotonic() < deadline:
            self.check_alive()
            state = self.dag_run_state(dag_id, run_id)
            if state in ("success", "failed"):
                return state
            time.sleep(0.5)
        raise AirflowStackError(f"run {run_id} of {dag_id} still {state} after {timeout} s")


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


# ---------------------------------------------------------------------- command line


@contextlib.contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt (like Ctrl-C) while the block runs, so a test or a service
    manager gets the same clean stop as a person at the terminal."""

    def _raise(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _cmd_up(args: argparse.Namespace) -> int:
    stack = AirflowStack(
        major=args.major,
        home=args.home,
        dags_folder=args.dags,
        port=args.port,
        username=args.username,
        password=args.password,
        dags_paused_at_creation=args.paused,
        log_dir=args.log_dir,
    )

    def say(message: str) -> None:
        print(message, flush=True)

    try:
        with interrupt_on_sigterm():
            try:
                started = time.monotonic()
                stack.start(timeout=args.timeout, progress=say)
                if args.wait_dags:
                    say(f"waiting for DAGs {', '.join(args.wait_dags)} ...")
                    stack.wait_for_dags(args.wait_dags, timeout=args.timeout)
                say(
                    f"Airflow {stack.version_label} is up in {time.monotonic() - started:.1f} s: {stack.url} "
                    f"(user {stack.username}, password {stack.password}); logs in {stack.log_dir}. "
                    "Ctrl-C stops it."
                )
                while True:
                    stack.check_alive()
                    time.sleep(1)
            except KeyboardInterrupt:
                say(f"stopping Airflow {stack.version_label} ...")
                return 0
            except AirflowStackError as exc:
                print(f"error: {exc}", file=sys.stderr, flush=True)
                return 1
            finally:
                # A second Ctrl-C must not interrupt the shutdown and leave processes behind.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                stack.stop()
                say("stopped")
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _cmd_trigger(args: argparse.Namespace) -> int:
    """Trigger a DAG on an already running instance started with the same home/major/port."""
    stack = AirflowStack(
        major=args.major,
        home=args.home,
        dags_folder=args.home,
        port=args.port,
        username=args.username,
        password=args.password,
    )
    run_id = stack.trigger_dag_run(args.dag_id)
    print(f"triggered {args.dag_id}: {run_id}", flush=True)
    if args.wait:
        state = stack.wait_for_dag_run(args.dag_id, run_id, timeout=args.timeout)
        print(f"{args.dag_id} {run_id}: {state}", flush=True)
        return 0 if state == "success" else 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``python -m devtools.airflow_stack``."""
    parser = argparse.ArgumentParser(
        prog="python -m devtools.airflow_stack",
        description="Run a real Airflow 3.3 or 2.11 on 127.0.0.1 (SQLite) from the project's venvs.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--major", type=int, choices=(2, 3), default=3, help="Airflow 3 (3.3) or 2 (2.11)")
        p.add_argument("--home", type=Path, required=True, help="AIRFLOW_HOME (created if missing)")
        p.add_argument("--username", default="admin")
        p.add_argument("--password", default="admin")
        p.add_argument("--timeout", type=float, default=180, help="seconds to wait (default 180)")

    up = sub.add_parser("up", help="start Airflow and keep it running until SIGINT/SIGTERM")
    common(up)
    up.add_argument("--dags", type=Path, required=True, help="DAGs folder")
    up.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one)")
    up.add_argument("--paused", action="store_true", help="new DAGs are paused at creation")
    up.add_argument("--log-dir", type=Path, default=None, help="process logs (default HOME/logs)")
    up.add_argument("--wait-dags", nargs="*", default=[], metavar="DAG_ID", help="wait until listed")
    up.set_defaults(func=_cmd_up)

    trigger = sub.add_parser("trigger", help="trigger a DAG run on a running instance via the REST API")
    common(trigger)
    trigger.add_argument("--port", type=int, required=True)
    trigger.add_argument("--wait", action="store_true", help="wait for the run to finish")
    trigger.add_argument("dag_id")
    trigger.set_defaults(func=_cmd_trigger)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m devtools.airflow_stack``."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
