"""Several Airflow instances in one code location, against two real Airflows at once (issue 12).

The shared Airflow 3.3 (`airflow3`) and a dedicated Airflow 2.11 started once for this module (the shared
2.11 would be started a second time on the `af3` worker; see tests/conftest.py). Sensors are evaluated with
`build_sensor_context` and their events stored as the sensor daemon stores them, as in
tests/test_sensor_integration.py.

- `test_two_instances_in_one_code_location`: two `build_defs_from_airflow_instance` calls merged, a DAG of one
  instance downstream of a DAG of the other (translator), one sensor and one cursor each, and a clear error when
  two instances of a code location share a name.
- `test_federation_example`: examples/federation/defs.py end to end: the warehouse DAG runs, its asset is
  recorded, the example's sensor triggers the reporting DAG on the other Airflow (once, also when a tick is
  evaluated again), and the reporting peering records that run once.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import dagster as dg
import pytest

from dagster_airpeer import (
    AirflowBasicAuthBackend,
    AirflowConfigError,
    AirflowInstance,
    Dag,
    DagsterAirflowTranslator,
    build_defs_from_airflow_instance,
)
from dagster_airpeer.sensor import sensor_name
from devtools.airflow_stack import AIRFLOW2_VENV, AirflowStack, AirflowStackError
from devtools.dags import TEST_DAG_IDS, TEST_DAGS_DIR

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "federation"
EXTRACT_DAG_FILE = EXAMPLE / "airflow_dags" / "warehouse" / "federation_extract.py"
REPORT_DAG_FILE = EXAMPLE / "airflow_dags" / "reporting" / "federation_report.py"
#: How long a test waits for an event (a DAG listed, a run recorded) before it fails.
WAIT_SECONDS = 120.0


@pytest.fixture(scope="module")
def airflow2_own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    """A dedicated Airflow 2.11 with the test DAGs and the example's reporting DAG, for this module only."""
    if not (AIRFLOW2_VENV / "bin" / "airflow").exists():
        pytest.fail(f"Airflow 2.11 is not installed ({AIRFLOW2_VENV}): run `make install`", pytrace=False)
    base = tmp_path_factory.mktemp("federation-af2")
    dags = base / "dags"
    shutil.copytree(TEST_DAGS_DIR, dags, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPORT_DAG_FILE, dags)
    stack = AirflowStack(major=2, home=base / "home", dags_folder=dags)
    try:
        stack.start()
        stack.wait_for_dags([*TEST_DAG_IDS, "federation_report"])
    except AirflowStackError as exc:
        stack.stop()
        pytest.fail(f"Airflow 2.11 did not start: {exc}", pytrace=False)
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def dagster_instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def _instance(stack: Any, name: str) -> AirflowInstance:
    return AirflowInstance(
        auth_backend=AirflowBasicAuthBackend(stack.url, stack.username, stack.password), name=name
    )


class Ticker:
    """One sensor's ticks: evaluated, its events stored as the daemon stores them, its own cursor kept."""

    def __init__(self, instance: dg.DagsterInstance, sensor: str) -> None:
        self.instance = instance
        self.sensor = sensor
        self.cursor: str | None = None

    def tick(self, defs: dg.Definitions) -> Any:
        context = dg.build_sensor_context(instance=self.instance, cursor=self.cursor, definitions=defs)
        result = defs.get_sensor_def(self.sensor)(context)
        if isinstance(result, dg.SensorResult):
            for event in result.asset_events:
                self.instance.report_runless_asset_event(event)
            self.cursor = result.cursor
        else:  # a SkipReason: the cursor is what the sensor updated
            self.cursor = context.cursor
        return result


def _run_ids(instance: dg.DagsterInstance, key: dg.AssetKey) -> list[str]:
    """The Airflow run ids of the key's materializations, one per materialization."""
    out = []
    for record in instance.fetch_materializations(key, limit=1000).records:
        materialization = record.asset_materialization
        assert materialization is not None
        out.append(str(materialization.metadata["airflow/run_id"].value))
    return out


def _tick_until_recorded(ticker: Ticker, defs: dg.Definitions, key: dg.AssetKey, run_id: str) -> None:
    """Tick until the run's materialization is stored (it appears once the run ended and Airflow listed it)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while run_id not in _run_ids(ticker.instance, key):
        if time.monotonic() > deadline:
            pytest.fail(f"run {run_id} was not recorded on {key.to_user_string()} within {WAIT_SECONDS} s")
        ticker.tick(defs)
        time.sleep(0.5)


def _run(stack: AirflowStack, dag_id: str) -> str:
    run_id = f"airpeer_fed_{uuid.uuid4().hex[:10]}"
    stack.trigger_dag_run(dag_id, run_id=run_id)
    assert stack.wait_for_dag_run(dag_id, run_id, timeout=WAIT_SECONDS) == "success"
    return run_id


def _import(path: Path) -> ModuleType:
    """Import a definitions file as `dagster dev -f` does (through the import system)."""
    name = f"_airpeer_federation_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    return module


class _DownstreamOf(DagsterAirflowTranslator):
    """Puts one DAG of this instance downstream of an asset of another instance."""

    def __init__(self, dag_id: str, upstream: dg.AssetKey) -> None:
        self.dag_id = dag_id
        self.upstream = upstream

    def get_asset_spec(
        self, instance_name: str, dag: Dag, *, dag_url: str, source: str | None = None
    ) -> dg.AssetSpec:
        spec = super().get_asset_spec(instance_name, dag, dag_url=dag_url, source=source)
        return spec.merge_attributes(deps=[self.upstream]) if dag.dag_id == self.dag_id else spec


def test_two_instances_in_one_code_location(
    airflow3: AirflowStack, airflow2_own: AirflowStack, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    left_ok = dg.AssetKey(["left", "dag", "airpeer_ok"])
    right_ok = dg.AssetKey(["right", "dag", "airpeer_ok"])
    right_two = dg.AssetKey(["right", "dag", "airpeer_two_tasks"])
    settings: dict[str, Any] = {
        "snapshot_dir": tmp_path / "snapshots",
        "lookback": timedelta(minutes=30),
        "late_commit_window": timedelta(seconds=60),
        "dag_selector_fn": lambda dag: dag.dag_id in {"airpeer_ok", "airpeer_two_tasks"},
    }
    defs = dg.Definitions.merge(
        build_defs_from_airflow_instance(airflow_instance=_instance(airflow3, "left"), **settings),
        build_defs_from_airflow_instance(
            airflow_instance=_instance(airflow2_own, "right"),
            translator=_DownstreamOf("airpeer_two_tasks", left_ok),
            **settings,
        ),
    )

    # Both instances' DAGs, apart by their keys, with the dependency across instances in the graph.
    graph = defs.resolve_asset_graph()
    assert {left_ok, right_ok, right_two} <= graph.get_all_asset_keys()
    assert graph.get(right_two).parent_keys == {left_ok}
    assert right_two in graph.get(left_ok).child_keys
    assert graph.get(left_ok).metadata["airflow/dag_url"].value.startswith(airflow3.url)
    assert graph.get(right_ok).metadata["airflow/dag_url"].value.startswith(airflow2_own.url)

    # One sensor each, each with its own cursor, each recording only its own instance's runs.
    sensors = {s.name for s in defs.sensors or []}
    assert {sensor_name("left"), sensor_name("right")} <= sensors
    left, right = (Ticker(dagster_instance, sensor_name(n)) for n in ("left", "right"))
    left.tick(defs)
    right.tick(defs)
    left_run, right_run = _run(airflow3, "airpeer_ok"), _run(airflow2_own, "airpeer_ok")
    _tick_until_recorded(left, defs, left_ok, left_run)
    _tick_until_recorded(right, defs, right_ok, right_run)
    left.tick(defs)
    right.tick(defs)
    assert _run_ids(dagster_instance, left_ok).count(left_run) == 1
    assert _run_ids(dagster_instance, right_ok).count(right_run) == 1
    assert right_run not in _run_ids(dagster_instance, left_ok)
    assert left_run not in _run_ids(dagster_instance, right_ok)
    assert left.cursor and right.cursor and left.cursor != right.cursor

    # Two instances of one code location under one name: refused at the second, naming both places.
    clash, clash_dir = tmp_path / "clash_defs.py", str(tmp_path / "clash")
    clash.write_text(
        "import dagster as dg\n"
        "from dagster_airpeer import AirflowBasicAuthBackend, AirflowInstance, build_defs_from_airflow_instance\n"
        "def same(url):\n"
        f"    auth = AirflowBasicAuthBackend(url, {airflow3.username!r}, {airflow3.password!r})\n"
        "    return AirflowInstance(auth_backend=auth, name='same')\n"
        f"one = build_defs_from_airflow_instance(airflow_instance=same({airflow3.url!r}), snapshot_dir={clash_dir!r})\n"
        f"two = build_defs_from_airflow_instance(airflow_instance=same({airflow2_own.url!r}), snapshot_dir={clash_dir!r})\n"
        "defs = dg.Definitions.merge(one, two)\n"
    )
    with pytest.raises(AirflowConfigError) as refused:
        _import(clash)
    message = str(refused.value)
    assert "named 'same'" in message and "unique" in message and "AirflowInstance(name=...)" in message
    assert "clash_defs.py:6 " in message and "clash_defs.py:7)" in message


def test_federation_example(
    airflow3: AirflowStack,
    airflow2_own: AirflowStack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    dagster_instance: dg.DagsterInstance,
) -> None:
    shutil.copy(EXTRACT_DAG_FILE, airflow3.dags_folder)
    airflow3.wait_for_dags(["federation_extract"], timeout=WAIT_SECONDS)
    for prefix, stack in (("WAREHOUSE", airflow3), ("REPORTING", airflow2_own)):
        monkeypatch.setenv(f"{prefix}_AIRFLOW_URL", stack.url)
        monkeypatch.setenv(f"{prefix}_AIRFLOW_USERNAME", stack.username)
        monkeypatch.setenv(f"{prefix}_AIRFLOW_PASSWORD", stack.password)
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # where the example's snapshots go
    example = _import(EXAMPLE / "defs.py")
    defs: dg.Definitions = example.defs
    extract = dg.AssetKey(["warehouse", "dag", "federation_extract"])
    report = dg.AssetKey(["reporting", "dag", "federation_report"])

    # The two federation DAGs only (the selector), the report downstream of the extract on the other Airflow.
    graph = defs.resolve_asset_graph()
    assert graph.get_all_asset_keys() == {extract, report}
    assert graph.get(report).parent_keys == {extract}
    assert extract == example.EXTRACT_KEY

    warehouse = Ticker(dagster_instance, sensor_name("warehouse"))
    reporting = Ticker(dagster_instance, sensor_name("reporting"))
    trigger = Ticker(dagster_instance, "trigger_report_after_extract")
    for ticker in (warehouse, reporting, trigger):
        ticker.tick(defs)
    assert trigger.cursor is not None  # its first tick starts after the newest materialization

    upstream_run = _run(airflow3, "federation_extract")
    _tick_until_recorded(warehouse, defs, extract, upstream_run)
    before = trigger.cursor
    triggered = trigger.tick(defs)
    federated = f"federated__{upstream_run}"
    assert isinstance(triggered, dg.SkipReason) and federated in (triggered.skip_message or "")
    # The same tick evaluated again (as when a daemon dies before storing the cursor): no second run.
    again = Ticker(dagster_instance, trigger.sensor)
    again.cursor = before
    assert federated not in (again.tick(defs).skip_message or "")
    assert again.cursor == trigger.cursor
    assert "no new materialization" in (trigger.tick(defs).skip_message or "")

    reporting_client = _instance(airflow2_own, "reporting")
    assert reporting_client.wait_for_dag_run("federation_report", federated, timeout=WAIT_SECONDS).succeeded
    runs = [
        r for r in reporting_client.list_dag_runs("federation_report") if r.run_id.startswith("federated__")
    ]
    assert [r.run_id for r in runs] == [federated]
    assert runs[0].conf == {"upstream_asset": extract.to_user_string(), "upstream_run_id": upstream_run}

    # Recorded once, by the reporting peering sensor, and only once however many ticks follow.
    _tick_until_recorded(reporting, defs, report, federated)
    for ticker in (warehouse, reporting, trigger, reporting):
        ticker.tick(defs)
    assert _run_ids(dagster_instance, report) == [federated]
    assert _run_ids(dagster_instance, extract).count(upstream_run) == 1
