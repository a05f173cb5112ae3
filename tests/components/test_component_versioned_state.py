"""AirflowInstanceComponent with `management_type: VERSIONED_STATE_STORAGE`, through the real `dg` CLI.

The instance's `defs_state_storage` is set in its dagster.yaml (a `UPathDefsStateStorage` on a local folder, the
same class that takes an `s3://` or `gs://` base path). `dg utils refresh-defs-state` fetches the snapshot from a
real Airflow 3.3 and stores it there as a new version; loads then read that version and send no request to Airflow.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import dagster as dg
import httpx
import pytest
import yaml
from dagster._core.definitions.definitions_load_context import DefinitionsLoadContext, DefinitionsLoadType
from dagster._core.definitions.repository_definition.repository_definition import RepositoryLoadData
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.defs_state.base import set_defs_state_storage
from dagster.components.core.component_tree import ComponentTree
from dagster_shared.serdes.objects.models.defs_state_info import DefsStateInfo, DefsStateManagementType

from dagster_airpeer import AirflowInstance, AirflowInstanceComponent
from dagster_airpeer.snapshot import AirflowSnapshot
from devtools.airflow_stack import AirflowStack

PROJECT = Path(__file__).parent / "dg_project"
DG = Path(sys.executable).parent / "dg"
COMPONENT = "dagster_airpeer.AirflowInstanceComponent"
KEY = "AirflowInstanceComponent[airflow]"  # the component's default defs state key for `name: airflow`


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of dg_project/ with one versioned-state component, and a DAGSTER_HOME whose storage is set."""
    if not DG.exists():
        pytest.fail(f"the dg CLI is not installed ({DG} is missing): run `make install`", pytrace=False)
    root = tmp_path / "project"
    shutil.copytree(PROJECT, root, ignore=shutil.ignore_patterns("__pycache__"))
    home = tmp_path / "dagster_home"
    home.mkdir()
    instance_config = {
        "telemetry": {"enabled": False},
        "defs_state_storage": {
            "module": "dagster._core.storage.defs_state.blob_storage_state_storage",
            "class": "UPathDefsStateStorage",
            "config": {"base_path": str(tmp_path / "state_storage")},
        },
    }
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance_config))
    folder = root / "src" / "airpeer_dg_demo" / "defs" / "airflow"
    folder.mkdir()
    defs_yaml = {
        "type": COMPONENT,
        "attributes": {
            "name": "airflow",
            "auth": {
                "type": "basic",
                "webserver_url": "{{ env.AIRFLOW_WEBSERVER_URL }}",
                "username": "{{ env.AIRFLOW_USERNAME }}",
                "password": "{{ env.AIRFLOW_PASSWORD }}",
            },
            "dags": {"ids": ["airpeer_ok", "airpeer_two_tasks"]},
            "snapshot_dir": str(tmp_path / "snapshots"),
            # No refresh at load (dg sets DAGSTER_IS_DEV_CLI): only `dg utils refresh-defs-state` writes state.
            "defs_state": {"management_type": "VERSIONED_STATE_STORAGE", "refresh_if_dev": False},
        },
    }
    (folder / "defs.yaml").write_text(yaml.safe_dump(defs_yaml, sort_keys=False))
    return root


def _home(project: Path) -> Path:
    return project.parent / "dagster_home"


def _dg(project: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {
        **os.environ,
        "PATH": f"{DG.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(project / "src"),
        "DAGSTER_HOME": str(_home(project)),
        "NO_COLOR": "1",
        **env,
    }
    return subprocess.run(
        [str(DG), *args], cwd=project, env=full_env, capture_output=True, text=True, timeout=300, check=False
    )


def _stored(project: Path) -> DefsStateInfo | None:
    """The latest versions the instance of DAGSTER_HOME records, read as a code server or run launcher would."""
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(_home(project)))) as instance:
        storage = instance.defs_state_storage
        assert storage is not None
        return storage.get_latest_defs_state_info()


def _version_file(project: Path, version: str) -> Path:
    # UPathDefsStateStorage keeps each version at <base_path>/<key, sanitized>/<version>.
    return project.parent / "state_storage" / "AirflowInstanceComponent__airflow__" / version


class _Load:
    """In-process loads of the project's code location that count requests and record the snapshot read."""

    def __init__(self, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.project = project
        self.requests: list[str] = []
        self.fetched_at: list[datetime] = []
        load = self

        def build(self: AirflowInstanceComponent, webserver_url: str | None = None) -> AirflowInstance:
            def count(request: httpx.Request) -> httpx.Response:
                load.requests.append(f"{request.method} {request.url}")
                raise httpx.ConnectError("airpeer test: no request may reach Airflow", request=request)

            return AirflowInstance(
                auth_backend=self.auth.build_backend(webserver_url),
                name=self.name,
                max_retries=0,
                transport=httpx.MockTransport(count),
            )

        original_read_state = AirflowInstanceComponent.read_state

        def read_state(self: AirflowInstanceComponent, state_path: Path) -> AirflowSnapshot:
            snapshot = original_read_state(self, state_path)
            load.fetched_at.append(snapshot.fetched_at)
            return snapshot

        monkeypatch.setattr(AirflowInstanceComponent, "build_airflow_instance", build)
        monkeypatch.setattr(AirflowInstanceComponent, "read_state", read_state)
        monkeypatch.delenv("DAGSTER_IS_DEV_CLI", raising=False)
        monkeypatch.syspath_prepend(str(project / "src"))

    def __call__(self, pinned: DefsStateInfo | None = None) -> dg.Definitions:
        """Load as a code server does (latest versions), or as a run worker does (the versions it was given)."""
        with (
            dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(_home(self.project)))) as instance,
            set_defs_state_storage(instance.defs_state_storage),
            # Made once the storage is set: an INITIALIZATION context reads the latest versions when made.
            DefinitionsLoadContext.scoped(
                DefinitionsLoadContext(DefinitionsLoadType.INITIALIZATION)
                if pinned is None
                else DefinitionsLoadContext(
                    DefinitionsLoadType.RECONSTRUCTION, RepositoryLoadData(defs_state_info=pinned)
                )
            ),
        ):
            try:
                defs = ComponentTree.for_project(self.project).build_defs()
                defs.get_repository_def()  # resolving the repository (as a run worker does) sends nothing either
                return defs
            finally:
                for module in [m for m in sys.modules if m.split(".")[0] == "airpeer_dg_demo"]:
                    del sys.modules[module]


@pytest.fixture
def load(project: Path, monkeypatch: pytest.MonkeyPatch) -> _Load:
    return _Load(project, monkeypatch)


def _asset_keys(defs: dg.Definitions) -> set[str]:
    return {spec.key.to_user_string() for spec in defs.resolve_all_asset_specs()}


def test_refresh_stores_versions_and_loads_read_them(
    project: Path, load: _Load, airflow3: AirflowStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        "AIRFLOW_WEBSERVER_URL": airflow3.url,
        "AIRFLOW_USERNAME": airflow3.username,
        "AIRFLOW_PASSWORD": airflow3.password,
    }
    assert _stored(project) is None

    first = _dg(project, "utils", "refresh-defs-state", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    info = _stored(project)
    assert info is not None and set(info.info_mapping) == {KEY}
    first_info = info.info_mapping[KEY]
    assert first_info is not None
    assert first_info.management_type == DefsStateManagementType.VERSIONED_STATE_STORAGE
    v1 = first_info.version
    state = _version_file(project, v1).read_text()
    snapshot = json.loads(state)
    first_fetched_at = AirflowSnapshot.model_validate_json(state).fetched_at
    assert snapshot["api_version"] == "v2" and snapshot["webserver_url"] == airflow3.url
    assert {"airpeer_ok", "airpeer_two_tasks"} <= {dag["dag_id"] for dag in snapshot["dags"]}
    assert airflow3.password not in state
    # Only the instance's storage holds it: nothing in the project folder (LOCAL_FILESYSTEM's place).
    assert not [p for p in project.rglob("state") if p.is_file()]

    # A `dg` load from that version: a wrong password would fail any request, so a load that works sent none.
    listed = _dg(project, "list", "defs", "--json", env={**env, "AIRFLOW_PASSWORD": "wrong"})
    assert listed.returncode == 0, listed.stdout + listed.stderr
    defs = json.loads(listed.stdout[listed.stdout.index("{") :])
    keys = {asset["asset_key"] for asset in defs["assets"]}
    assert keys == {"airflow/dag/airpeer_ok", "airflow/dag/airpeer_two_tasks"}
    assert [sensor["name"] for sensor in defs["sensors"]] == ["airflow__airflow_dag_runs"]

    # The same load in-process, counting: 0 requests.
    for name, value in {**env, "AIRFLOW_PASSWORD": "wrong"}.items():
        monkeypatch.setenv(name, value)
    in_process = load()
    assert _asset_keys(in_process) == keys
    assert load.requests == [] and load.fetched_at == [first_fetched_at]

    # A second refresh writes a new version and moves the latest pointer; the first version is kept.
    second = _dg(project, "utils", "refresh-defs-state", env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    info = _stored(project)
    assert info is not None
    second_info = info.info_mapping[KEY]
    assert second_info is not None
    v2 = second_info.version
    assert v2 != v1
    assert _version_file(project, v1).exists() and _version_file(project, v2).exists()
    second_fetched_at = AirflowSnapshot.model_validate_json(_version_file(project, v2).read_text()).fetched_at
    assert second_fetched_at > first_fetched_at

    # A code server now loads the new version; a run worker given the first version still loads that one.
    load.fetched_at.clear()
    assert _asset_keys(load()) == keys
    assert _asset_keys(load(pinned=DefsStateInfo.add_version(None, KEY, v1))) == keys
    assert load.requests == []
    assert load.fetched_at == [second_fetched_at, first_fetched_at]


def test_dg_list_components_lists_the_component(project: Path) -> None:
    listed = _dg(project, "list", "components", "--json", env={})
    assert listed.returncode == 0, listed.stdout + listed.stderr
    items = json.loads(listed.stdout[listed.stdout.index("{") :])["items"]
    component = [item for item in items if item["key"] == COMPONENT]
    assert len(component) == 1
    assert component[0]["summary"].startswith("Peer one Airflow instance")


def test_without_a_storage_entry_the_instance_keeps_versions_under_dagster_home(tmp_path: Path) -> None:
    # What docs/components.md says of a dagster.yaml with no `defs_state_storage` entry.
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(tmp_path))) as instance:
        storage = instance.defs_state_storage
        assert storage is not None
        assert Path(str(getattr(storage, "base_path", ""))) == tmp_path / "defs_state"
