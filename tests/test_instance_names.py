"""Instance names are unique in a code location (_names.py), without Airflow: loads come from stored snapshots."""

from __future__ import annotations

import importlib.util
import socket
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pytest

from dagster_airpeer import (
    AirflowBasicAuthBackend,
    AirflowConfigError,
    AirflowInstance,
    Dag,
    build_defs_from_airflow_instance,
)
from dagster_airpeer.snapshot import AirflowSnapshot, snapshot_path


def _closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _defs_file(tmp_path: Path, names: list[str]) -> Path:
    """A definitions file peering one (down) Airflow per name, each from a snapshot stored for it."""
    lines = [
        "import dagster as dg",
        "from dagster_airpeer import AirflowBasicAuthBackend, AirflowInstance, build_defs_from_airflow_instance",
        "peered = []",
    ]
    for i, name in enumerate(names):
        url = _closed_url()
        directory = tmp_path / f"snap{i}"
        directory.mkdir()
        snapshot = AirflowSnapshot(
            instance_name=name,
            webserver_url=url,
            api_version="v2",
            fetched_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
            dags=(Dag(dag_id=f"dag_{i}"),),
        )
        snapshot_path(directory, name).write_text(snapshot.model_dump_json())
        lines.append(
            f"peered.append(build_defs_from_airflow_instance(airflow_instance=AirflowInstance("
            f"auth_backend=AirflowBasicAuthBackend({url!r}, 'u', 'p'), name={name!r}, max_retries=0), "
            f"snapshot_dir={str(directory)!r}))"
        )
    lines.append("defs = dg.Definitions.merge(*peered)")
    path = tmp_path / "defs.py"
    path.write_text("\n".join(lines) + "\n")
    return path


def _import(path: Path) -> dg.Definitions:
    name = f"_airpeer_names_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    defs: dg.Definitions = module.defs
    return defs


def test_two_instances_of_one_name_in_a_code_location_are_refused(tmp_path: Path) -> None:
    path = _defs_file(tmp_path, ["one", "two", "one"])
    with pytest.raises(AirflowConfigError) as refused:
        _import(path)
    message = str(refused.value)
    assert "named 'one'" in message and "unique" in message
    assert f"{path}:4 " in message and f"{path}:6)" in message


def test_distinct_names_load_and_each_instance_has_its_own_sensor(tmp_path: Path) -> None:
    defs = _import(_defs_file(tmp_path, ["one", "two"]))
    assert {s.name for s in defs.sensors or []} == {"one__airflow_dag_runs", "two__airflow_dag_runs"}
    assert defs.resolve_asset_graph().get_all_asset_keys() == {
        dg.AssetKey(["one", "dag", "dag_0"]),
        dg.AssetKey(["two", "dag", "dag_1"]),
    }


def test_importing_the_same_file_again_is_a_new_load(tmp_path: Path) -> None:
    # A code server or `airpeer clean` imports a location again after a change: that is not a second instance.
    path = _defs_file(tmp_path, ["one"])
    _import(path)
    _import(path)


def test_outside_an_import_rebuilding_a_peering_is_allowed(tmp_path: Path) -> None:
    # A test or a notebook cell rebuilding the same peering; Dagster still refuses both in one Definitions.
    path = _defs_file(tmp_path, ["one"])
    url = path.read_text().split("AirflowBasicAuthBackend(")[1].split(",")[0].strip("'")
    instance = AirflowInstance(auth_backend=AirflowBasicAuthBackend(url, "u", "p"), name="one", max_retries=0)
    for _ in range(2):
        build_defs_from_airflow_instance(airflow_instance=instance, snapshot_dir=tmp_path / "snap0")
