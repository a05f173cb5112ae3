"""`airpeer doctor` and `airpeer list` as a user runs them: `python -m dagster_airpeer ...` against the real
Airflow 3.3 and 2.11 stacks, with a real Dagster instance in a temporary DAGSTER_HOME."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dagster_airpeer import AirflowBasicAuthBackend, AirflowInstance
from dagster_airpeer.doctor import CHECKS
from dagster_airpeer.feed import FeedState
from dagster_airpeer.sensor import SensorCursor

DEFS_DIR = Path(__file__).parent / "defs"
DEFS = DEFS_DIR / "doctor_peer.py"
SENSOR = "doctor_peered__airflow_dag_runs"


def _home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return home


def _env(airflow: Any, home: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "AIRPEER_TEST_AIRFLOW_URL": airflow.url,
        "AIRPEER_TEST_AIRFLOW_USER": airflow.username,
        "AIRPEER_TEST_AIRFLOW_PASSWORD": airflow.password,
        "DAGSTER_HOME": str(home),
        **extra,
    }


def _airpeer(
    airflow: Any, home: Path, *args: str, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dagster_airpeer", *args],
        env=_env(airflow, home, **env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def _set_cursor(airflow: Any, home: Path, cursor: SensorCursor, **env: str) -> None:
    """Store a sensor state with this cursor, as Dagster's own CLI writes it (loading the definitions)."""
    written = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "sensor", "cursor", "-f", str(DEFS), SENSOR,
         "--set", cursor.to_json()],
        env=_env(airflow, home, **env), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert written.returncode == 0, written.stderr


class _Forwarder(socketserver.ThreadingTCPServer):
    """A loopback TCP forwarder to the real Airflow: closing it makes that Airflow unreachable at its URL."""

    daemon_threads = True

    def __init__(self, target: tuple[str, int]) -> None:
        forwarder_target = target

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                upstream = socket.create_connection(forwarder_target)

                def pump(source: socket.socket, sink: socket.socket) -> None:
                    with contextlib.suppress(OSError):
                        while data := source.recv(65536):
                            sink.sendall(data)
                    with contextlib.suppress(OSError):
                        sink.shutdown(socket.SHUT_WR)

                back = threading.Thread(target=pump, args=(upstream, self.request), daemon=True)
                back.start()
                pump(self.request, upstream)
                back.join(30)
                upstream.close()

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def _statuses(doc: dict[str, Any]) -> dict[str, str]:
    return {c["check"]: c["status"] for c in doc["checks"]}


def test_doctor_and_list_against_real_airflow(airflow: Any, tmp_path: Path) -> None:
    home = _home(tmp_path)
    client = AirflowInstance(
        AirflowBasicAuthBackend(airflow.url, airflow.username, airflow.password), name="c"
    )
    airflow.wait_for_dags(["airpeer_ok", "airpeer_fail"])
    run_id = f"doctor_{uuid.uuid4().hex[:8]}"
    client.trigger_dag_run("airpeer_ok", run_id=run_id)
    run = client.wait_for_dag_run("airpeer_ok", run_id, timeout=180)

    # Before the sensor ever ran: Airflow's checks pass, the sensor's only warn (exit 0).
    first = _airpeer(airflow, home, "doctor", "--defs", str(DEFS), "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    doc = json.loads(first.stdout)
    statuses = _statuses(doc)
    assert [c["check"] for c in doc["checks"]] == list(CHECKS)
    assert {c: statuses[c] for c in ("airflow", "login", "clock", "dags", "run_page")} == dict.fromkeys(
        ("airflow", "login", "clock", "dags", "run_page"), "ok"
    ), doc
    assert (statuses["sensor"], statuses["cursor"]) == ("warn", "warn")
    found = {c["check"]: c for c in doc["checks"]}
    expected_version = "v2" if airflow.major == 3 else "v1"
    assert found["airflow"]["data"]["api_version"] == expected_version
    assert found["airflow"]["data"]["airflow_version"].startswith(airflow.version_label)
    assert found["dags"]["data"]["peered"] == 2 and found["dags"]["data"]["dags"] >= 2
    assert abs(found["clock"]["data"]["skew_seconds"]) < 30
    assert "checking doctor_peered" in first.stderr

    # A stored sensor state with a cursor, as Dagster's own CLI writes it: the cursor is read and its lag shown.
    _set_cursor(
        airflow,
        home,
        SensorCursor(feed=FeedState(watermark=datetime.now(timezone.utc) - timedelta(minutes=5))),
    )
    text = _airpeer(airflow, home, "doctor", "-f", str(DEFS))
    assert text.returncode == 0, text.stdout + text.stderr
    lines = [line for line in text.stdout.splitlines() if not line.startswith("airpeer doctor:")]
    assert len(lines) == len(CHECKS), text.stdout
    (cursor_line,) = [line for line in lines if "  cursor: " in line]
    assert cursor_line.startswith("ok   doctor_peered  cursor: watermark "), text.stdout
    (sensor_line,) = [line for line in lines if "  sensor: " in line]
    assert sensor_line.startswith("warn doctor_peered  sensor:") and "stopped" in sensor_line
    assert "Traceback" not in text.stderr

    # `-m MODULE` from the directory holding it, as `dagster dev -m`.
    listed = _airpeer(airflow, home, "list", "-m", "doctor_peer", "--json", cwd=DEFS_DIR)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    rows = {row["dag_id"]: row for row in json.loads(listed.stdout)["dags"]}
    assert sorted(rows) == ["airpeer_fail", "airpeer_ok"]
    assert rows["airpeer_ok"]["asset_key"] == "doctor_peered/dag/airpeer_ok"
    assert rows["airpeer_ok"]["paused"] is False and rows["airpeer_ok"]["in_airflow"] is True
    assert rows["airpeer_ok"]["last_run"]["run_id"] == run.run_id
    assert rows["airpeer_ok"]["last_run"]["state"] == "success"
    plain = _airpeer(airflow, home, "list", "--defs", str(DEFS))
    assert plain.returncode == 0 and len(plain.stdout.splitlines()) == 2, plain.stdout + plain.stderr

    # A refused login is a configuration error: loading the definitions stops with one line, exit status 1.
    refused = _airpeer(airflow, home, "doctor", "--defs", str(DEFS), AIRPEER_TEST_AIRFLOW_PASSWORD="wrong-pw")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith("airpeer doctor: "), refused.stderr
    assert "wrong-pw" not in refused.stdout + refused.stderr


def test_doctor_with_airflow_down_still_checks_the_sensor_and_cursor(airflow: Any, tmp_path: Path) -> None:
    """Airflow unreachable: the definitions load from the stored snapshot, the Airflow checks fail (exit 1),
    the sensor and cursor are still read (the lag on this machine's clock)."""
    home = _home(tmp_path)
    target = urlsplit(airflow.url)
    forwarder = _Forwarder((target.hostname or "127.0.0.1", target.port or 80))
    url = forwarder.url
    try:
        # Loading through the forwarder stores the snapshot the next load falls back to.
        _set_cursor(
            airflow, home, SensorCursor(feed=FeedState(watermark=datetime.now(timezone.utc) - timedelta(minutes=5))),
            AIRPEER_TEST_AIRFLOW_URL=url,
        )  # fmt: skip
    finally:
        forwarder.shutdown()
        forwarder.server_close()
    down = _airpeer(airflow, home, "doctor", "--defs", str(DEFS), "--json", AIRPEER_TEST_AIRFLOW_URL=url)
    assert down.returncode == 1, down.stdout + down.stderr
    doc = json.loads(down.stdout)
    statuses = _statuses(doc)
    assert [statuses[c] for c in ("airflow", "login", "clock", "dags", "run_page")] == ["fail"] * 5, doc
    found = {c["check"]: c for c in doc["checks"]}
    assert url in found["airflow"]["found"]
    assert statuses["sensor"] == "warn" and "stopped" in found["sensor"]["found"]
    assert statuses["cursor"] == "ok" and "this machine's clock" in found["cursor"]["found"]
    assert doc["ok"] is False and doc["counts"]["fail"] == 5
