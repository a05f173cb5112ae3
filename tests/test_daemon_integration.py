"""The sensor under the real `dagster-daemon`: evaluated, timed out and stored exactly as in production."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from dagster_airpeer import RUN_STATUS_CHECK_NAME, AirflowBasicAuthBackend, AirflowInstance
from devtools.dagster_dev import init_dagster_home

pytestmark = pytest.mark.integration

DEFS = Path(__file__).parent / "defs" / "daemon_peer.py"
KEY = dg.AssetKey(["daemon_peered", "dag", "airpeer_ok"])
FAIL_KEY = dg.AssetKey(["daemon_peered", "dag", "airpeer_fail"])


class Daemon:
    """A real `dagster-daemon run` on the test's DAGSTER_HOME, which a test may restart."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp_path, self.env = tmp_path, env
        self.home = Path(env["DAGSTER_HOME"])
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = (tmp_path / "daemon.log").open("a")

    def start(self) -> None:
        init_dagster_home(self.home)  # before the daemon and its code server race to create it
        self.proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "dagster-daemon"),
                "run",
                "-w",
                str(self.tmp_path / "workspace.yaml"),
            ],
            cwd=self.tmp_path,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


@pytest.fixture
def daemon_process(airflow: Any, tmp_path: Path) -> Iterator[Daemon]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    (tmp_path / "workspace.yaml").write_text(f"load_from:\n  - python_file: {DEFS}\n")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "AIRPEER_TEST_AIRFLOW_URL": airflow.url,
        "AIRPEER_TEST_AIRFLOW_USER": airflow.username,
        "AIRPEER_TEST_AIRFLOW_PASSWORD": airflow.password,
        "AIRPEER_TEST_SENSOR_INTERVAL": "2",
    }
    daemon = Daemon(tmp_path, env)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()
        daemon.log.close()
        secrets_seen = [
            p for p in tmp_path.rglob("*.log") if airflow.password in p.read_text(errors="replace")
        ]
        assert airflow.password == "admin" or not secrets_seen


@pytest.fixture
def daemon(daemon_process: Daemon) -> Path:
    return daemon_process.home


def _wait(predicate: Any, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}; daemon log tail:\n{log.read_text()[-3000:]}")


def _run_ids(instance: dg.DagsterInstance, key: dg.AssetKey) -> list[str]:
    records = instance.fetch_materializations(key, limit=1000).records
    return [
        str(r.asset_materialization.metadata["airflow/run_id"].value)
        for r in records
        if r.asset_materialization
    ]


def _sensor_ticks(instance: dg.DagsterInstance) -> int:
    states = [s for s in instance.all_instigator_state() if s.name == "daemon_peered__airflow_dag_runs"]
    if not states:
        return 0
    return len(instance.get_ticks(states[0].instigator_origin_id, states[0].selector_id, limit=1000))


def test_daemon_records_runs_once_and_runs_the_users_check(
    airflow: Any, daemon: Path, tmp_path: Path
) -> None:
    airflow.wait_for_dags(["airpeer_ok", "airpeer_fail"])
    client = AirflowInstance(
        auth_backend=AirflowBasicAuthBackend(airflow.url, airflow.username, airflow.password), name="client"
    )
    ok_run, fail_run = f"daemon_{uuid.uuid4().hex[:8]}", f"daemon_{uuid.uuid4().hex[:8]}"
    client.trigger_dag_run("airpeer_ok", run_id=ok_run)
    client.trigger_dag_run("airpeer_fail", run_id=fail_run)
    client.wait_for_dag_run("airpeer_ok", ok_run, timeout=180)
    client.wait_for_dag_run("airpeer_fail", fail_run, timeout=180)

    log = tmp_path / "daemon.log"
    with dg.DagsterInstance.from_config(str(daemon)) as instance:
        _wait(lambda: ok_run in _run_ids(instance, KEY), 180, "the materialization of the Airflow run", log)

        def failed_check_seen() -> bool:
            history = instance.event_log_storage.get_asset_check_execution_history(
                dg.AssetCheckKey(FAIL_KEY, RUN_STATUS_CHECK_NAME), limit=100
            )
            return any(
                r.event
                and r.event.dagster_event
                and r.event.dagster_event.asset_check_evaluation_data.metadata["airflow/run_id"].value
                == fail_run
                and not r.event.dagster_event.asset_check_evaluation_data.passed
                for r in history
            )

        _wait(failed_check_seen, 60, "the failed run's check evaluation", log)

        def user_checks_ran() -> bool:
            # ok_dag_check comes with defs=, merged_later_check from a Definitions merged later (#13.5).
            return all(
                any(
                    r.status.value == "SUCCEEDED"
                    for r in instance.event_log_storage.get_asset_check_execution_history(
                        dg.AssetCheckKey(KEY, name), limit=10
                    )
                )
                for name in ("ok_dag_check", "merged_later_check")
            )

        _wait(user_checks_ran, 180, "the user's checks run requested by the sensor", log)

        # Later ticks add nothing.
        ticks = _sensor_ticks(instance)
        _wait(lambda: _sensor_ticks(instance) >= ticks + 3, 60, "three more sensor ticks", log)
        assert _run_ids(instance, KEY).count(ok_run) == 1


OBSERVED_KEYS = [dg.AssetKey(k) for k in ("daemon_first_out", "daemon_gate_out", "daemon_retried_out")]


def test_daemon_records_task_assets_once_across_a_killed_daemon(
    airflow: Any, daemon_process: Daemon, tmp_path: Path
) -> None:
    """Observe under the real daemon: each task's asset once per run, the user's check on a mapped asset
    run after it, and a daemon killed (SIGKILL) and started again neither loses nor doubles a task."""
    airflow.wait_for_dags(["airpeer_observe_steps"])
    client = AirflowInstance(
        auth_backend=AirflowBasicAuthBackend(airflow.url, airflow.username, airflow.password), name="client"
    )
    log = tmp_path / "daemon.log"
    first_run = f"daemon_obs_{uuid.uuid4().hex[:8]}"
    client.trigger_dag_run("airpeer_observe_steps", run_id=first_run)
    client.wait_for_dag_run("airpeer_observe_steps", first_run, timeout=180)
    with dg.DagsterInstance.from_config(str(daemon_process.home)) as instance:
        _wait(
            lambda: all(first_run in _run_ids(instance, key) for key in OBSERVED_KEYS),
            180,
            "the task assets of the first run",
            log,
        )

        def user_check_ran() -> bool:
            history = instance.event_log_storage.get_asset_check_execution_history(
                dg.AssetCheckKey(OBSERVED_KEYS[0], "first_out_check"), limit=10
            )
            return any(r.status.value == "SUCCEEDED" for r in history)

        _wait(user_check_ran, 180, "the user's check on a mapped asset", log)

        daemon_process.stop(signal.SIGKILL)
        second_run = f"daemon_obs_{uuid.uuid4().hex[:8]}"
        client.trigger_dag_run("airpeer_observe_steps", run_id=second_run)
        client.wait_for_dag_run("airpeer_observe_steps", second_run, timeout=180)
        daemon_process.start()
        _wait(
            lambda: all(second_run in _run_ids(instance, key) for key in OBSERVED_KEYS),
            180,
            "the task assets of the run that ended while the daemon was down",
            log,
        )
        ticks = _sensor_ticks(instance)
        _wait(lambda: _sensor_ticks(instance) >= ticks + 3, 60, "three more sensor ticks", log)
        for key in OBSERVED_KEYS:
            run_ids = _run_ids(instance, key)
            assert run_ids.count(first_run) == 1 and run_ids.count(second_run) == 1, (key, run_ids)
