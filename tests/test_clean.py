"""`airpeer clean` against a real Airflow and a real Dagster instance."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from dagster_airpeer import RUN_STATUS_CHECK_NAME, AirflowBasicAuthBackend, AirflowInstance
from dagster_airpeer.events import events_for_run

pytestmark = pytest.mark.integration
DEFS = Path(__file__).parent / "defs" / "clean_peer.py"


def _cli(airflow: Any, home: Path | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AIRPEER_TEST_AIRFLOW_URL": airflow.url,
        "AIRPEER_TEST_AIRFLOW_USER": airflow.username,
        "AIRPEER_TEST_AIRFLOW_PASSWORD": airflow.password,
    }
    env.pop("DAGSTER_HOME", None)
    if home is not None:
        env["DAGSTER_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "dagster_airpeer", "clean", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_clean_deletes_airflow_runs_and_dagster_history(airflow: Any, tmp_path: Path) -> None:
    airflow.wait_for_dags(["airpeer_ok", "airpeer_fail", "airpeer_two_tasks"])
    client = AirflowInstance(
        auth_backend=AirflowBasicAuthBackend(airflow.url, airflow.username, airflow.password), name="c"
    )
    run_id = f"clean_{uuid.uuid4().hex[:8]}"
    client.trigger_dag_run("airpeer_ok", run_id=run_id)
    run = client.wait_for_dag_run("airpeer_ok", run_id, timeout=180)
    other = f"keep_{uuid.uuid4().hex[:8]}"
    client.trigger_dag_run("airpeer_two_tasks", run_id=other)  # not peered by the defs file: must survive
    client.wait_for_dag_run("airpeer_two_tasks", other, timeout=180)

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    key = dg.AssetKey(["clean_peered", "dag", "airpeer_ok"])
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for event in events_for_run(run, key, run_url="u"):
            instance.report_runless_asset_event(event)
        assert instance.fetch_materializations(key, limit=10).records

    refused = _cli(airflow, home, "--defs", str(DEFS))
    assert refused.returncode == 2 and "--yes" in refused.stderr
    no_home = _cli(airflow, None, "--defs", str(DEFS), "--yes")
    assert no_home.returncode == 2 and "DAGSTER_HOME" in no_home.stderr
    unknown = _cli(airflow, home, "--defs", str(DEFS), "--dag", "nope", "--yes")
    assert unknown.returncode == 1 and "'nope'" in unknown.stderr and "airpeer_ok" in unknown.stderr

    done = _cli(airflow, home, "--defs", str(DEFS), "--yes")
    assert done.returncode == 0, done.stderr
    assert "Airflow runs deleted" in done.stdout and airflow.password not in done.stdout + done.stderr
    assert client.list_dag_runs("airpeer_ok") == [] and client.list_dag_runs("airpeer_fail") == []
    assert other in [r.run_id for r in client.list_dag_runs("airpeer_two_tasks")]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert not instance.fetch_materializations(key, limit=10).records
        check = dg.AssetCheckKey(key, RUN_STATUS_CHECK_NAME)
        assert not instance.event_log_storage.get_asset_check_execution_history(check, limit=10)
