"""The tutorial's observe stage on real processes: the demo's Airflow 3.3 and `dagster dev -f observe.py`.

The definitions, built at load: the three tasks of ``rebuild_customers_list`` are mapped to the assets they
build, the lineage is ``raw_data/raw_customers -> stg_customers -> customers -> customers_csv -> the DAG's
asset``, and each mapped asset carries its task's metadata. It is checked in-process (the stage's file imported
against the demo's Airflow) and in the running `dagster dev` (GraphQL, and the asset graph in a headless
Chromium, whose screenshot the tutorial README shows).

The sensor, end to end: a run triggered through Airflow's REST API materializes each mapped asset once, as its
task succeeds (the first task's asset while the run is held before its last task); in-process, the sensor of
``observe_check_on_asset.py`` requests the checks job for ``customers_csv_has_rows`` with the materialization of
``customers_csv``.

Needs the dbt manifest (`make dbt-manifest`, which `make test` runs first) and, for the screenshot, Debian's
chromium (`make browser`).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import dagster as dg
import pytest
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from test_tutorial_browser import (  # noqa: F401  (browser, screenshot_dir: fixtures, asked for by name)
    UI_TIMEOUT_SECONDS,
    body_text,
    browser,
    dismiss_community_dialog,
    screenshot_dir,
    wait_for_text,
)
from tutorial_helpers import (
    ASSET_KEY,
    DAG_ID,
    EXAMPLE_DIR,
    SENSOR,
    USER_CHECK,
    Materialization,
    TutorialStack,
    TutorialStackManager,
    import_stage,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.airflow3, pytest.mark.slow]

DEFS_DIR = EXAMPLE_DIR / "dagster_defs"
OBSERVE_DEFS = DEFS_DIR / "observe.py"
CHECK_ON_ASSET_DEFS = DEFS_DIR / "observe_check_on_asset.py"
DBT_MANIFEST = EXAMPLE_DIR / "dbt_project" / "target" / "manifest.json"

RAW_CUSTOMERS = ("raw_data", "raw_customers")
STG_CUSTOMERS = ("stg_customers",)
CUSTOMERS = ("customers",)
CUSTOMERS_CSV = ("customers_csv",)
#: Each mapped asset and the task of rebuild_customers_list that builds it.
TASK_OF = {
    RAW_CUSTOMERS: "load_raw_customers",
    STG_CUSTOMERS: "build_dbt_models",
    CUSTOMERS: "build_dbt_models",
    CUSTOMERS_CSV: "export_customers",
}
#: Each asset of the stage and the assets it depends on: the lineage the tutorial shows.
PARENTS = {
    RAW_CUSTOMERS: set(),
    STG_CUSTOMERS: {RAW_CUSTOMERS},
    CUSTOMERS: {STG_CUSTOMERS},
    CUSTOMERS_CSV: {CUSTOMERS},
    ASSET_KEY: {CUSTOMERS_CSV},
}

_ASSET_NODES = """
query ObservedAssetNodes {
  assetNodes {
    assetKey { path }
    dependencyKeys { path }
    metadataEntries { label ... on TextMetadataEntry { text } ... on UrlMetadataEntry { url } }
    assetChecksOrError { ... on AssetChecks { checks { name } } }
  }
}
"""


@pytest.fixture
def observe_stack(tutorial_stacks: TutorialStackManager) -> TutorialStack:
    """The demo running the observe stage (replaces a running stack of another stage)."""
    if not DBT_MANIFEST.is_file():
        pytest.fail(f"{DBT_MANIFEST} is missing: run `make dbt-manifest`", pytrace=False)
    return tutorial_stacks.get(OBSERVE_DEFS)


def load_stage(
    path: Path, stack: TutorialStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> ModuleType:
    """Import a stage's definitions file as `dagster dev` would, against the stack's Airflow."""
    return import_stage(
        path,
        monkeypatch,
        tmp_path,
        AIRFLOW_URL=stack.airflow_url,
        AIRFLOW_USERNAME="admin",
        AIRFLOW_PASSWORD="admin",
    )


def _plain(metadata: dict[str, Any]) -> dict[str, Any]:
    return {k: getattr(v, "value", v) for k, v in metadata.items()}


def test_observe_definitions_load_with_the_lineage_and_task_metadata(
    observe_stack: TutorialStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    module = load_stage(OBSERVE_DEFS, observe_stack, monkeypatch, tmp_path)
    defs: dg.Definitions = module.defs
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()

    assert {tuple(k.path) for k in graph.get_all_asset_keys()} == set(PARENTS)
    for key, parents in PARENTS.items():
        assert {tuple(p.path) for p in graph.get(dg.AssetKey(key)).parent_keys} == parents, key

    base = observe_stack.airflow_url
    for key, task_id in TASK_OF.items():
        metadata = _plain(graph.get(dg.AssetKey(key)).metadata)
        assert metadata["airflow/dag_id"] == DAG_ID, key
        assert metadata["airflow/task_id"] == task_id, key
        assert metadata["airflow/task_url"] == f"{base}/dags/{DAG_ID}/tasks/{task_id}", key
        assert metadata["airflow/task_is_mapped"] is False, key
        assert metadata["airflow/operator"], key
        assert metadata["airpeer/airflow_instance"] == "airflow_instance_one", key
    # The DAG's own asset is not mapped to a task.
    assert "airflow/task_id" not in _plain(graph.get(dg.AssetKey(ASSET_KEY)).metadata)

    # The dbt models come from dagster-dbt, with the project's tests as their checks.
    dbt_checks = {(tuple(c.asset_key.path), c.name) for c in graph.asset_check_keys}
    assert (CUSTOMERS, "unique_customers_customer_id") in dbt_checks
    assert (STG_CUSTOMERS, "not_null_stg_customers_country_code") in dbt_checks
    # This stage has no user check (peer_with_check's moves onto customers_csv in observe_check_on_asset).
    assert not [name for key, name in dbt_checks if name == USER_CHECK]


def test_observe_check_on_asset_puts_the_user_check_on_customers_csv(
    observe_stack: TutorialStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    module = load_stage(CHECK_ON_ASSET_DEFS, observe_stack, monkeypatch, tmp_path)
    defs: dg.Definitions = module.defs
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()

    for key, parents in PARENTS.items():
        assert {tuple(p.path) for p in graph.get(dg.AssetKey(key)).parent_keys} == parents, key
    user_checks = {tuple(c.asset_key.path) for c in graph.asset_check_keys if c.name == USER_CHECK}
    assert user_checks == {CUSTOMERS_CSV}
    assert _plain(graph.get(dg.AssetKey(CUSTOMERS_CSV)).metadata)["airflow/task_id"] == "export_customers"

    # The check reads the file export_customers writes, from $TUTORIAL_OUTPUT_DIR.
    check = module.customers_csv_has_rows
    assert check().description == "customers.csv is missing"
    output = tmp_path / "out"
    output.mkdir()
    (output / "customers.csv").write_text("customer_id,full_name\n1,Ada\n2,Grace\n")
    result = check()
    assert result.passed is True
    assert result.metadata["row_count"].value == 2


def test_dagster_dev_shows_the_observed_lineage_and_task_metadata(observe_stack: TutorialStack) -> None:
    with observe_stack.dagster() as dagster:
        nodes = dagster.query(_ASSET_NODES)["assetNodes"]
    by_key = {tuple(node["assetKey"]["path"]): node for node in nodes}
    assert set(by_key) == set(PARENTS)
    for key, parents in PARENTS.items():
        assert {tuple(d["path"]) for d in by_key[key]["dependencyKeys"]} == parents, key
    for key, task_id in TASK_OF.items():
        metadata = {
            entry["label"]: entry.get("text", entry.get("url")) for entry in by_key[key]["metadataEntries"]
        }
        assert metadata["airflow/task_id"] == task_id, key
        assert metadata["airflow/task_url"] == f"{observe_stack.airflow_url}/dags/{DAG_ID}/tasks/{task_id}"


def test_asset_graph_shows_the_lineage(
    observe_stack: TutorialStack,
    request: pytest.FixtureRequest,
) -> None:
    # Fixtures of the browser test (selenium over Debian's chromium), by name: they are imported above.
    driver: WebDriver = request.getfixturevalue("browser")
    directory: Path = request.getfixturevalue("screenshot_dir")
    dismiss_community_dialog(observe_stack)
    driver.get(f"{observe_stack.dagster_url}/asset-groups")
    # The names are listed in the sidebar first; the graph's nodes repeat them once it is drawn.
    text = wait_for_text(driver, "raw_customers", "stg_customers", "customers_csv", DAG_ID)
    WebDriverWait(driver, UI_TIMEOUT_SECONDS, poll_frequency=0.5).until(
        lambda d: all(
            body_text(d).count(name) >= 2 for name in ("raw_customers", "stg_customers", "customers_csv")
        )
    )
    assert "Global asset lineage" in text
    driver.save_screenshot(str(directory / "tutorial_observe_lineage.png"))


def _set_paused(stack: TutorialStack, paused: bool) -> None:
    with stack.airflow() as http:
        response = http.patch(f"/dags/{DAG_ID}", json={"is_paused": paused})
    assert response.status_code == 200, response.text


def _task_states(stack: TutorialStack, run_id: str) -> dict[str, str | None]:
    with stack.airflow() as http:
        response = http.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")
    response.raise_for_status()
    return {ti["task_id"]: ti["state"] for ti in response.json()["task_instances"]}


def _run_of(stack: TutorialStack, run_id: str) -> dict[str, Any]:
    with stack.airflow() as http:
        response = http.get(f"/dags/{DAG_ID}/dagRuns/{run_id}")
    response.raise_for_status()
    run: dict[str, Any] = response.json()
    return run


def _recorded(stack: TutorialStack, key: tuple[str, ...], run_id: str) -> list[Materialization]:
    with stack.dagster() as dagster:
        return [m for m in dagster.materializations(key) if m.airflow_run_id == run_id]


def _timestamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def test_each_mapped_asset_is_materialized_as_its_task_succeeds(observe_stack: TutorialStack) -> None:
    stack = observe_stack
    run_id = stack.trigger_dag()
    try:
        # Hold the run after its first task: a paused DAG's running runs get no new task instances (Airflow's
        # scheduler skips them), so export_customers cannot end before the sensor has had its ticks.
        wait_for(
            f"load_raw_customers of {run_id} to succeed",
            lambda: _task_states(stack, run_id).get("load_raw_customers") == "success",
            180,
            interval=0.5,
            context=stack.log_tail(),
        )
        _set_paused(stack, True)
        first = wait_for(
            f"raw_data/raw_customers recorded for {run_id}",
            lambda: _recorded(stack, RAW_CUSTOMERS, run_id) or None,
            180,
            context=stack.log_tail(),
        )
        # Recorded while the run runs and before its last task ended.
        assert _run_of(stack, run_id)["state"] == "running"
        assert _task_states(stack, run_id).get("export_customers") != "success"
        assert not _recorded(stack, CUSTOMERS_CSV, run_id)
    finally:
        _set_paused(stack, False)
    assert stack.wait_for_dag_run(run_id) == "success", stack.log_tail()

    found = {
        key: wait_for(
            f"a materialization of {'/'.join(key)} for {task_id} of {run_id}",
            lambda k=key: _recorded(stack, k, run_id) or None,
            180,
            context=stack.log_tail(),
        )
        for key, task_id in TASK_OF.items()
    }
    stack.wait_for_materialization(run_id)
    # One tick more that started after the last of them was stored: it must add nothing.
    last_stored = max(m.timestamp_ms for ms in found.values() for m in ms) / 1000

    def later_tick() -> bool:
        with stack.dagster() as dagster:
            ticks = dagster.sensor_ticks(OBSERVE_DEFS.name, SENSOR)
        return any(t.timestamp > last_stored and t.status in ("SUCCESS", "SKIPPED") for t in ticks)

    wait_for("a sensor tick after the materializations", later_tick, 120, context=stack.log_tail())

    run = _run_of(stack, run_id)
    end_of = {}
    for key, task_id in TASK_OF.items():
        records = _recorded(stack, key, run_id)
        assert len(records) == 1, (key, records)  # once per task completion
        metadata = records[0].metadata
        assert metadata["airflow/dag_id"] == DAG_ID, key
        assert metadata["airflow/task_id"] == task_id, key
        assert metadata["airflow/run_id"] == run_id, key
        assert metadata["airflow/try_number"] == 1, key
        end_of[key] = float(metadata["airflow/end_date"])
        assert end_of[key] <= _timestamp(run["end_date"]), key
    # The tasks ended in the DAG's order, and the first one was recorded before the last one ended.
    assert end_of[RAW_CUSTOMERS] <= end_of[STG_CUSTOMERS] == end_of[CUSTOMERS] <= end_of[CUSTOMERS_CSV]
    assert first[0].timestamp_ms / 1000 < end_of[CUSTOMERS_CSV]


def test_the_check_on_customers_csv_is_requested_after_it_materializes(
    observe_stack: TutorialStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # In-process, without a daemon: the sensor of observe_check_on_asset.py over the stack's Airflow history
    # (a successful run of the DAG, the one the test above made if it ran).
    with observe_stack.airflow() as http:
        response = http.get(f"/dags/{DAG_ID}/dagRuns", params={"state": "success", "limit": 1})
    response.raise_for_status()
    if not response.json()["dag_runs"]:
        run_id = observe_stack.trigger_dag()
        assert observe_stack.wait_for_dag_run(run_id) == "success", observe_stack.log_tail()
    module = load_stage(CHECK_ON_ASSET_DEFS, observe_stack, monkeypatch, tmp_path)
    defs: dg.Definitions = module.defs
    sensor = defs.resolve_sensor_def(SENSOR)
    with dg.instance_for_test() as instance:
        result = sensor(dg.build_sensor_context(instance=instance, definitions=defs))
        assert isinstance(result, dg.SensorResult)
        csv_events = [
            e
            for e in result.asset_events or []
            if isinstance(e, dg.AssetMaterialization) and e.asset_key == dg.AssetKey(CUSTOMERS_CSV)
        ]
        assert csv_events, result.asset_events
        check = dg.AssetCheckKey(dg.AssetKey(CUSTOMERS_CSV), USER_CHECK)
        requests = result.run_requests or []
        # One run of the sensor's job (the RunRequest names none: it is the sensor's only target), the checks job.
        assert sensor.job_name == "airflow_instance_one__dag_asset_checks"
        assert [(r.job_name, r.asset_check_keys) for r in requests] == [(None, [check])]
        # The next tick has nothing new: no materialization, no check run.
        for event in result.asset_events or []:
            instance.report_runless_asset_event(event)
        again = sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor, definitions=defs))
        assert isinstance(again, dg.SensorResult)
        assert not [e for e in again.asset_events or [] if isinstance(e, dg.AssetMaterialization)]
        assert not again.run_requests
