"""AirflowInstanceComponent loads from its defs state with 0 requests to Airflow, like the Python API's output."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
from dagster.components.testing import create_defs_folder_sandbox
from dagster.components.utils.project_paths import get_local_state_path

from dagster_airpeer import (
    AirflowBasicAuthBackend,
    AirflowConfigError,
    AirflowInstance,
    AirflowInstanceComponent,
    Dag,
    build_defs_from_airflow_instance,
)
from dagster_airpeer.snapshot import AirflowSnapshot, snapshot_path

URL = "http://127.0.0.1:9"
TYPE = "dagster_airpeer.AirflowInstanceComponent"
DAGS = (Dag(dag_id="etl_a", tags=("finance",)), Dag(dag_id="etl_b"), Dag(dag_id="other", tags=("finance",)))


class _Counter:
    def __init__(self) -> None:
        self.requests: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.method} {request.url}")
        raise httpx.ConnectError("airpeer test: no request may reach Airflow", request=request)


@pytest.fixture
def counter(monkeypatch: pytest.MonkeyPatch) -> _Counter:
    """Every AirflowInstance the component builds sends through a transport that counts and fails."""
    counting = _Counter()

    def build(self: AirflowInstanceComponent, webserver_url: str | None = None) -> AirflowInstance:
        return AirflowInstance(
            auth_backend=self.auth.build_backend(webserver_url),
            name=self.name,
            max_retries=0,
            transport=httpx.MockTransport(counting),
        )

    monkeypatch.setattr(AirflowInstanceComponent, "build_airflow_instance", build)
    # Not under `dagster dev` / `dg`: the state is read, never refreshed, as in a run worker.
    monkeypatch.delenv("DAGSTER_IS_DEV_CLI", raising=False)
    return counting


def _snapshot(name: str, api_version: str = "v2") -> AirflowSnapshot:
    return AirflowSnapshot(
        instance_name=name,
        webserver_url=URL,
        api_version=api_version,
        fetched_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
        dags=DAGS,
    )


def _attributes(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "auth": {"type": "basic", "webserver_url": URL, "username": "admin", "password": "pw"},
        "defs_state": {"management_type": "LOCAL_FILESYSTEM"},
        **extra,
    }


def _write_state(project_root: Path, name: str) -> None:
    path = get_local_state_path(f"AirflowInstanceComponent[{name}]", project_root)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_snapshot(name).model_dump_json())


_ADDED_BY_COMPONENTS = ("dagster/code_references", "dagster/component_origin")


def _comparable(spec: dg.AssetSpec) -> tuple[Any, ...]:
    # Dagster's component loading adds two metadata entries: the component, and its defs.yaml.
    metadata = {k: v for k, v in spec.metadata.items() if k not in _ADDED_BY_COMPONENTS}
    return (
        spec.key,
        spec.description,
        spec.group_name,
        spec.tags,
        spec.kinds,
        spec.owners,
        spec.deps,
        metadata,
    )


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with create_defs_folder_sandbox() as box:
        # Dagster finds the local state folder by importing the project's defs module.
        monkeypatch.syspath_prepend(str(box.project_root / "src"))
        yield box


def test_load_from_state_sends_no_request(sandbox: Any, counter: _Counter) -> None:
    sandbox.scaffold_component(
        component_cls=AirflowInstanceComponent,
        defs_path="af",
        defs_yaml_contents={"type": TYPE, "attributes": _attributes("af", dags={"patterns": ["etl_*"]})},
    )
    _write_state(sandbox.project_root, "af")
    with sandbox.build_all_defs() as defs:
        keys = {spec.key for spec in defs.resolve_all_asset_specs()}
        assert keys == {dg.AssetKey(["af", "dag", "etl_a"]), dg.AssetKey(["af", "dag", "etl_b"])}
        assert [s.name for s in defs.sensors or []] == ["af__airflow_dag_runs"]
        defs.get_repository_def()  # resolving the repository (as a run worker does) sends nothing either
    assert counter.requests == []


def test_same_output_as_build_defs_from_airflow_instance(
    sandbox: Any, counter: _Counter, tmp_path: Path
) -> None:
    attributes = _attributes(
        "af", dags={"tags": ["finance"]}, translation={"key_prefix": "airflow", "group": "airflow"}
    )
    sandbox.scaffold_component(
        component_cls=AirflowInstanceComponent,
        defs_path="af",
        defs_yaml_contents={"type": TYPE, "attributes": attributes},
    )
    _write_state(sandbox.project_root, "af")
    with sandbox.build_all_defs() as from_component:
        component_specs = sorted(from_component.resolve_all_asset_specs(), key=lambda s: s.key)
        component_sensors = [s.name for s in from_component.sensors or []]
        component_checks = sorted(str(k) for c in from_component.asset_checks or [] for k in c.check_keys)
    assert counter.requests == []

    # The Python API, with Airflow down, builds from the same snapshot (its last good one).
    instance = AirflowInstance(AirflowBasicAuthBackend(URL, "admin", "pw"), "af", max_retries=0)
    snapshot_path(tmp_path, "af").write_text(_snapshot("af").model_dump_json())
    component = AirflowInstanceComponent.resolve_from_dict(attributes)
    from_python = build_defs_from_airflow_instance(
        airflow_instance=instance,
        snapshot_dir=tmp_path,
        dag_selector_fn=component.dags.matches,
        translator=component.get_translator(),
    )
    python_specs = sorted(from_python.resolve_all_asset_specs(), key=lambda s: s.key)
    assert [_comparable(s) for s in python_specs] == [_comparable(s) for s in component_specs]
    assert [s.name for s in from_python.sensors or []] == component_sensors
    assert sorted(str(k) for c in from_python.asset_checks or [] for k in c.check_keys) == component_checks
    assert [spec.key for spec in component_specs] == [
        dg.AssetKey(["airflow", "af", "dag", "etl_a"]),
        dg.AssetKey(["airflow", "af", "dag", "other"]),
    ]


def test_two_instances_get_their_own_sensor(sandbox: Any, counter: _Counter) -> None:
    for name in ("one", "two"):
        sandbox.scaffold_component(
            component_cls=AirflowInstanceComponent,
            defs_path=name,
            defs_yaml_contents={"type": TYPE, "attributes": _attributes(name)},
        )
        _write_state(sandbox.project_root, name)
    with sandbox.build_all_defs() as defs:
        assert sorted(s.name for s in defs.sensors or []) == [
            "one__airflow_dag_runs",
            "two__airflow_dag_runs",
        ]
        assert len(defs.resolve_all_asset_specs()) == 2 * len(DAGS)
    assert counter.requests == []


def test_two_instances_with_one_name_are_refused(sandbox: Any, counter: _Counter) -> None:
    for folder, key in (("first", None), ("second", "another-key")):
        attributes = _attributes("same")
        if key is not None:
            # A key of its own, so that only airpeer's check (not Dagster's unique state keys) can catch it.
            attributes["defs_state"]["key"] = key
        sandbox.scaffold_component(
            component_cls=AirflowInstanceComponent,
            defs_path=folder,
            defs_yaml_contents={"type": TYPE, "attributes": attributes},
        )
    with pytest.raises(Exception) as excinfo, sandbox.build_all_defs():
        pass
    chain = []
    error: BaseException | None = excinfo.value
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    refusal = [e for e in chain if isinstance(e, AirflowConfigError)]
    assert refusal and "named 'same'" in str(refusal[0]) and "unique" in str(refusal[0])


def test_no_state_yet_defines_nothing(sandbox: Any, counter: _Counter) -> None:
    sandbox.scaffold_component(
        component_cls=AirflowInstanceComponent,
        defs_path="af",
        defs_yaml_contents={"type": TYPE, "attributes": _attributes("af")},
    )
    with sandbox.build_all_defs() as defs:
        assert list(defs.resolve_all_asset_specs()) == []
    assert counter.requests == []


def test_write_state_falls_back_on_the_last_good_snapshot(counter: _Counter, tmp_path: Path) -> None:
    component = AirflowInstanceComponent.resolve_from_dict(_attributes("af", snapshot_dir=str(tmp_path)))
    snapshot_path(tmp_path, "af").write_text(_snapshot("af", api_version="v1").model_dump_json())
    state = tmp_path / "state" / "af"
    component.write_state_to_path(state)
    assert counter.requests  # it tried Airflow first
    assert AirflowSnapshot.model_validate_json(state.read_text()).api_version == "v1"
