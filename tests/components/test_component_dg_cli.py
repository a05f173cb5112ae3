"""AirflowInstanceComponent through the real `dg` CLI, in a temporary copy of the dg project of dg_project/.

`dg` runs with `--use-active-venv` (where it has the flag) in .venv; the project is not installed, its src/ is
on PYTHONPATH. The component is found through airpeer's `dagster_dg_cli.registry_modules` entry point.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.airflow_stack import AirflowStack

PROJECT = Path(__file__).parent / "dg_project"
DG = Path(sys.executable).parent / "dg"
COMPONENT = "dagster_airpeer.AirflowInstanceComponent"
PASSWORD = "hunter2-secret"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    if not DG.exists():
        pytest.fail(f"the dg CLI is not installed ({DG} is missing): run `make install`", pytrace=False)
    root = tmp_path / "project"
    shutil.copytree(PROJECT, root, ignore=shutil.ignore_patterns("__pycache__"))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return root


def _dg(project: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {
        **os.environ,
        "PATH": f"{DG.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(project / "src"),
        "DAGSTER_HOME": str(project.parent / "dagster_home"),
        "NO_COLOR": "1",
        **env,
    }
    return subprocess.run(
        [str(DG), *args],
        cwd=project,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _defs_yaml(project: Path) -> Path:
    return project / "src" / "airpeer_dg_demo" / "defs" / "airflow" / "defs.yaml"


def _edit(project: Path, change: Any) -> None:
    path = _defs_yaml(project)
    document = yaml.safe_load(path.read_text())
    change(document["attributes"])
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def test_scaffold_then_check_good_and_bad_yaml(project: Path) -> None:
    env = {
        "AIRFLOW_WEBSERVER_URL": f"http://127.0.0.1:{_closed_port()}",
        "AIRFLOW_USERNAME": "admin",
        "AIRFLOW_PASSWORD": PASSWORD,
    }
    scaffolded = _dg(project, "scaffold", "defs", COMPONENT, "airflow", env=env)
    assert scaffolded.returncode == 0, scaffolded.stdout + scaffolded.stderr
    document = yaml.safe_load(_defs_yaml(project).read_text())
    assert document["type"] == COMPONENT
    assert document["attributes"]["name"] == "airflow"
    assert document["attributes"]["auth"]["password"] == "{{ env.AIRFLOW_PASSWORD }}"

    # Airflow is down and there is no state yet: without a refresh at load, the YAML is checked and the
    # location loads (defining nothing until `dg utils refresh-defs-state` has run).
    _edit(project, lambda a: a["defs_state"].update(refresh_if_dev=False))
    good = _dg(project, "check", "defs", "--use-active-venv", env=env)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "All definitions loaded successfully" in good.stdout

    # A value the schema allows but the model refuses: the error names the field and the file's line.
    _edit(project, lambda a: a.update(sensor={"minimum_interval_seconds": 0}))
    bad_value = _dg(project, "check", "defs", "--use-active-venv", env=env)
    output = bad_value.stdout + bad_value.stderr
    assert bad_value.returncode != 0
    assert "minimum_interval_seconds" in output and "must be >= 1" in output
    assert "defs.yaml" in output and PASSWORD not in output

    # A misspelt field is refused by the schema check before anything loads.
    _edit(project, lambda a: (a.pop("sensor"), a["auth"].update(pasword="x")))
    bad_field = _dg(project, "check", "defs", "--use-active-venv", env=env)
    output = bad_field.stdout + bad_field.stderr
    assert bad_field.returncode != 0
    assert "pasword" in output and PASSWORD not in output


def test_refresh_state_from_real_airflow3_then_load(project: Path, airflow3: AirflowStack) -> None:
    env = {
        "AIRFLOW_WEBSERVER_URL": airflow3.url,
        "AIRFLOW_USERNAME": airflow3.username,
        "AIRFLOW_PASSWORD": airflow3.password,
    }
    scaffolded = _dg(project, "scaffold", "defs", COMPONENT, "airflow", env=env)
    assert scaffolded.returncode == 0, scaffolded.stdout + scaffolded.stderr

    def configure(attributes: dict[str, Any]) -> None:
        attributes["defs_state"]["refresh_if_dev"] = False
        attributes["dags"] = {"ids": ["airpeer_ok"], "patterns": ["airpeer_two_*"]}
        attributes["translation"] = {"key_prefix": "af3", "group": "airflow"}
        attributes["task_mappings"] = [
            {"dag_id": "airpeer_two_tasks", "tasks": {"load": [{"key": "made_by_load"}]}}
        ]
        attributes["snapshot_dir"] = str(project.parent / "snapshots")

    _edit(project, configure)
    refreshed = _dg(project, "utils", "refresh-defs-state", env=env)
    assert refreshed.returncode == 0, refreshed.stdout + refreshed.stderr
    states = [p for p in project.rglob("state") if p.is_file()]
    assert len(states) == 1
    snapshot = json.loads(states[0].read_text())
    assert snapshot["api_version"] == "v2" and snapshot["webserver_url"] == airflow3.url
    assert {"airpeer_ok", "airpeer_two_tasks"} <= {dag["dag_id"] for dag in snapshot["dags"]}
    assert set(snapshot["tasks"]) == {"airpeer_two_tasks"}  # task lists only for the mapped DAG
    assert airflow3.password not in states[0].read_text()

    # Loading from that state: a wrong password would fail any request, so a load that works sent none.
    listed = _dg(project, "list", "defs", "--json", env={**env, "AIRFLOW_PASSWORD": "wrong"})
    assert listed.returncode == 0, listed.stdout + listed.stderr
    defs = json.loads(listed.stdout[listed.stdout.index("{") :])
    keys = {asset["asset_key"] for asset in defs["assets"]}
    assert {"af3/airflow/dag/airpeer_ok", "af3/airflow/dag/airpeer_two_tasks", "made_by_load"} <= keys
    assert not any("airpeer_fail" in key for key in keys)
    assert [sensor["name"] for sensor in defs["sensors"]] == ["airflow__airflow_dag_runs"]
