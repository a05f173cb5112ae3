"""Tests of devtools.airflow_stack: real Airflow 3.3 and 2.11 start, run a DAG, and stop without leftovers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from devtools.airflow_stack import (
    ROOT,
    AirflowStack,
    AirflowStackError,
    _decode_address,
    free_port,
    listening_sockets,
    port_is_listening,
    session_pids,
)
from devtools.dags import TEST_DAG_IDS, TEST_DAGS_DIR

AF_PARAMS = [
    pytest.param(3, id="af3", marks=[pytest.mark.integration, pytest.mark.airflow3]),
    pytest.param(2, id="af2", marks=[pytest.mark.integration, pytest.mark.airflow2]),
]


def _require(major: int) -> None:
    venv = ROOT / (".venv" if major == 3 else ".venvs/airflow2")
    if not (venv / "bin" / "airflow").exists():
        pytest.fail(f"{venv} has no Airflow: run `make install`", pytrace=False)


def _processes_with_home(home: Path) -> list[int]:
    """Return the live processes whose environment has AIRFLOW_HOME=home (catches escaped descendants)."""
    marker = f"AIRFLOW_HOME={home}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in environ and state != "Z":
            found.append(int(entry))
    return found


def _auth(stack: AirflowStack) -> dict[str, object]:
    """httpx keyword arguments authenticating to the REST API, done by hand (not via the stack helpers)."""
    if stack.major == 2:
        return {"auth": (stack.username, stack.password)}
    response = httpx.post(
        f"{stack.url}/auth/token", json={"username": stack.username, "password": stack.password}, timeout=30
    )
    assert response.status_code == 201, response.text
    return {"headers": {"Authorization": f"Bearer {response.json()['access_token']}"}}


@pytest.fixture
def dags_copy(tmp_path: Path) -> Path:
    """A private copy of the test DAGs."""
    target = tmp_path / "dags"
    shutil.copytree(TEST_DAGS_DIR, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


@pytest.fixture
def own_stack(request: pytest.FixtureRequest, tmp_path: Path, dags_copy: Path) -> Iterator[AirflowStack]:
    """A dedicated, not yet started stack of the parametrized major version; always stopped afterwards."""
    major: int = request.param
    _require(major)
    stack = AirflowStack(major=major, home=tmp_path / "home", dags_folder=dags_copy)
    try:
        yield stack
    finally:
        stack.stop()


# ---------------------------------------------------------------------- without Airflow


def test_cli_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devtools.airflow_stack", "up", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "--major" in result.stdout
    assert "--dags" in result.stdout


def test_missing_venv_says_make_install(tmp_path: Path) -> None:
    stack = AirflowStack(major=2, home=tmp_path / "home", dags_folder=tmp_path)
    stack.venv = tmp_path / "no-venv"
    with pytest.raises(AirflowStackError, match="make install"):
        stack.start(timeout=10)
    assert not stack.running


def test_settings_bind_loopback_only(tmp_path: Path) -> None:
    af3 = AirflowStack(major=3, home=tmp_path / "a", dags_folder=tmp_path, port=free_port())
    af2 = AirflowStack(major=2, home=tmp_path / "b", dags_folder=tmp_path, extra_env={"X_TEST": "1"})
    assert af3.env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert af3.url == f"http://127.0.0.1:{af3.port}"
    assert af3.api_url.endswith("/api/v2")
    assert af2.env["AIRFLOW__WEBSERVER__WEB_SERVER_HOST"] == "127.0.0.1"
    assert af2.api_url.endswith("/api/v1")
    assert af2.env["X_TEST"] == "1"
    assert af2.env["AIRFLOW_HOME"] == str(tmp_path / "b")
    assert af2.python().name == "python"


def test_decode_proc_net_addresses() -> None:
    assert _decode_address("0100007F:1F90") == ("127.0.0.1", 8080)
    assert _decode_address("00000000:0050") == ("0.0.0.0", 80)  # noqa: S104 - decoding, not binding
    assert _decode_address("00000000000000000000000001000000:0016") == ("::1", 22)


def test_listening_helpers_see_a_socket() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert port_is_listening(port)
        assert ("127.0.0.1", port) in listening_sockets([os.getpid()])
    assert not port_is_listening(port)


# ---------------------------------------------------------------------- real Airflow


@pytest.mark.parametrize("own_stack", AF_PARAMS, indirect=True)
def test_start_trigger_outage_stop(own_stack: AirflowStack) -> None:
    stack = own_stack
    stack.start()
    sessions = stack.session_ids()
    assert listening_sockets(stack.pids()) == [("127.0.0.1", stack.port)]
    stack.wait_for_dags(TEST_DAG_IDS)

    api = stack.api_url
    auth = _auth(stack)
    body: dict[str, object] = {"logical_date": None} if stack.major == 3 else {}
    with httpx.Client(timeout=30, **auth) as http:  # type: ignore[arg-type]
        response = http.post(f"{api}/dags/airpeer_ok/dagRuns", json=body)
        assert response.status_code == 200, response.text
        run_id = response.json()["dag_run_id"]
        state = "queued"
        deadline = time.monotonic() + 120
        while state not in ("success", "failed") and time.monotonic() < deadline:
            time.sleep(0.5)
            run = http.get(f"{api}/dags/airpeer_ok/dagRuns/{quote(run_id, safe='')}")
            assert run.status_code == 200, run.text
            state = run.json()["state"]
        assert state == "success"

        # Outage: the REST API goes away and comes back; the same credentials (JWT) still work.
        stack.stop_api_server()
        assert not port_is_listening(stack.port)
        with pytest.raises(httpx.TransportError):
            http.get(f"{api}/dags")
        stack.start_api_server()
        assert http.get(f"{api}/dags/airpeer_ok").status_code == 200

    # A DAG file added while Airflow runs is picked up within seconds.
    source = (stack.dags_folder / "airpeer_ok.py").read_text()
    added = source.replace('dag_id="airpeer_ok"', 'dag_id="airpeer_added"')
    (stack.dags_folder / "airpeer_added.py").write_text(added)
    stack.wait_for_dags(["airpeer_added"], timeout=90)

    sessions = sorted({*sessions, *stack.session_ids()})
    stack.stop()
    assert session_pids(sessions) == []
    assert _processes_with_home(stack.home) == []
    assert not port_is_listening(stack.port)
    stack.stop()  # idempotent


def test_shared_fixture_serves_the_test_dags(airflow: AirflowStack, request: pytest.FixtureRequest) -> None:
    marks = {m.name for m in request.node.iter_markers()}
    assert {"integration", f"airflow{airflow.major}"} <= marks
    assert airflow.running
    details = httpx.get(f"{airflow.api_url}/dags/airpeer.dotted-id", timeout=30, **_auth(airflow))  # type: ignore[arg-type]
    assert details.status_code == 200, details.text
    dag = details.json()
    assert dag["dag_id"] == "airpeer.dotted-id"
    assert dag["is_paused"] is False
    assert sorted(t["name"] for t in dag["tags"]) == ["airpeer", "test"]
    assert dag["owners"] == ["data-eng"]
    assert set(TEST_DAG_IDS) <= airflow.dag_ids()


@pytest.mark.integration
@pytest.mark.airflow3
def test_start_failure_reports_log_tail(tmp_path: Path, dags_copy: Path) -> None:
    _require(3)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        stack = AirflowStack(major=3, home=tmp_path / "home", dags_folder=dags_copy, port=port)
        with pytest.raises(AirflowStackError, match="api-server") as excinfo:
            stack.start(timeout=120)
    assert "last lines of" in str(excinfo.value)
    assert not stack.running
    assert _processes_with_home(stack.home) == []


@pytest.mark.integration
@pytest.mark.airflow3
def test_cli_up_runs_until_sigterm(tmp_path: Path, dags_copy: Path) -> None:
    _require(3)
    home = tmp_path / "home"
    port = free_port()
    cmd = [sys.executable, "-m", "devtools.airflow_stack", "up", "--major", "3", "--home", str(home)]
    cmd += ["--dags", str(dags_copy), "--port", str(port), "--wait-dags", "airpeer_ok"]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if " is up " in line or "error" in line:
                break
        assert any(f"http://127.0.0.1:{port}" in line and "admin" in line for line in lines), lines
        assert httpx.get(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=10).status_code == 200
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, "".join(lines) + out
        assert "stopped" in out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert _processes_with_home(home.resolve()) == []
    assert not port_is_listening(port)
