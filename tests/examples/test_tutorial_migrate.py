"""The tutorial's migrate and decommission stages: `dagster_defs/migrate.py` and `dagster_defs/standalone.py`.

- standalone.py (no Airflow): its definitions load, with the same asset keys as the observe stage's mapped
  assets and a daily schedule; its job, executed in process, does the pipeline's work (load, dbt build with the
  project's tests as checks, export) into a temporary output directory.
- migrate.py against the demo's Airflow 3.3 (`make demo TUTORIAL_STAGE=migrate`, started on free ports): the
  definitions load in process with one proxy job per task of ``rebuild_customers_list``, each selecting that
  task's assets, and the running `dagster dev` serves those jobs (what a proxied task launches by name).

Needs the dbt manifest (`make dbt-manifest`, which `make test` runs first).
"""

from __future__ import annotations

import csv
from pathlib import Path

import dagster as dg
import pytest
from tutorial_helpers import DAG_ID, EXAMPLE_DIR, TutorialStack, TutorialStackManager, import_stage, wait_for

from dagster_airpeer.in_airflow.naming import proxy_job_name

DEFS_DIR = EXAMPLE_DIR / "dagster_defs"
MIGRATE_DEFS = DEFS_DIR / "migrate.py"
STANDALONE_DEFS = DEFS_DIR / "standalone.py"
DBT_MANIFEST = EXAMPLE_DIR / "dbt_project" / "target" / "manifest.json"
INSTANCE = "airflow_instance_one"

#: Each task of rebuild_customers_list and the asset keys Dagster materializes for it once proxied.
KEYS_OF_TASK = {
    "load_raw_customers": {("raw_data", "raw_customers")},
    "build_dbt_models": {("stg_customers",), ("customers",)},
    "export_customers": {("customers_csv",)},
}
ALL_KEYS = set().union(*KEYS_OF_TASK.values())


@pytest.fixture(autouse=True)
def _manifest() -> None:
    if not DBT_MANIFEST.is_file():
        pytest.fail(f"{DBT_MANIFEST} is missing: run `make dbt-manifest`", pytrace=False)


def test_standalone_loads_and_its_job_does_the_pipelines_work(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    module = import_stage(STANDALONE_DEFS, monkeypatch, tmp_path)
    defs: dg.Definitions = module.defs
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert {tuple(k.path) for k in graph.get_all_asset_keys()} == ALL_KEYS
    # No Airflow any more: no peered DAG asset, no sensor.
    assert not list(defs.sensors or [])
    (schedule,) = list(defs.schedules or [])
    assert isinstance(schedule, dg.ScheduleDefinition)
    assert schedule.cron_schedule == "0 0 * * *" and schedule.job_name == DAG_ID

    job = defs.resolve_job_def(DAG_ID)
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert result.success
    materialized = {tuple(e.asset_key.path) for e in result.get_asset_materialization_events()}
    assert materialized == ALL_KEYS
    checks = {e.check_name for e in result.get_asset_check_evaluations()}
    assert "unique_customers_customer_id" in checks  # the dbt project's tests ran as the models' checks
    with (tmp_path / "out" / "customers.csv").open(newline="") as handle:
        assert [int(r["customer_id"]) for r in csv.DictReader(handle)] == list(range(1, 21))


@pytest.fixture
def migrate_stack(tutorial_stacks: TutorialStackManager) -> TutorialStack:
    """The demo running the migrate stage (replaces a running stack of another stage)."""
    return tutorial_stacks.get(MIGRATE_DEFS)


_JOBS = """
query Jobs {
  repositoriesOrError {
    ... on RepositoryConnection { nodes { jobs { name } } }
  }
}
"""


@pytest.mark.integration
@pytest.mark.airflow3
@pytest.mark.slow
def test_migrate_defines_a_proxy_job_per_task_served_by_dagster_dev(
    migrate_stack: TutorialStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    module = import_stage(
        MIGRATE_DEFS,
        monkeypatch,
        tmp_path,
        AIRFLOW_URL=migrate_stack.airflow_url,
        AIRFLOW_USERNAME="admin",
        AIRFLOW_PASSWORD="admin",
    )
    defs: dg.Definitions = module.defs
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    for task_id, keys in KEYS_OF_TASK.items():
        job = defs.resolve_job_def(proxy_job_name(INSTANCE, DAG_ID, task_id))
        selected = {tuple(k.path) for k in job.asset_layer.selected_asset_keys}
        assert selected == keys, task_id
        for key in keys:
            assert graph.get(dg.AssetKey(list(key))).is_executable, key
    with migrate_stack.dagster() as dagster:
        nodes = dagster.query(_JOBS)["repositoriesOrError"]["nodes"]
    served = {j["name"] for node in nodes for j in node["jobs"]}
    assert {proxy_job_name(INSTANCE, DAG_ID, t) for t in KEYS_OF_TASK} <= served


_RUNS_OF_AIRFLOW_RUN = """
query ProxyRuns($value: String!) {
  runsOrError(filter: {tags: [{key: "airpeer/run_id", value: $value}]}) {
    ... on Runs { results { runId jobName status tags { key value } } }
  }
}
"""


def _proxied(stack: TutorialStack, *task_ids: str) -> None:
    """Write the stack's proxied state (a copy of airflow_dags/proxied_state) with `task_ids` proxied."""
    lines = ["tasks:"]
    for task_id in KEYS_OF_TASK:
        lines += [f"- id: {task_id}", f"  proxied: {'true' if task_id in task_ids else 'false'}"]
    (stack.base / "proxied_state" / f"{DAG_ID}.yaml").write_text("\n".join(lines) + "\n")


def _wait_for_parse(stack: TutorialStack, proxied: set[str]) -> None:
    """Wait until Airflow's serialized DAG (re-parsed by its DAG processor) shows exactly `proxied` as proxied.

    A task instance's operator comes from the serialized DAG when the scheduler creates it, and that is what
    tells the peering sensor that Dagster records the task's assets itself; the worker, though, re-parses the
    DAG file (and reads the YAML) when it runs the task. Triggering between the edit and the next parse would
    proxy a task the sensor still takes for an Airflow one: the README says to wait for the UI to show it.
    """

    def parsed() -> bool:
        with stack.airflow() as http:
            response = http.get(f"/dags/{DAG_ID}/tasks")
        response.raise_for_status()
        shown = {
            t["task_id"]
            for t in response.json()["tasks"]
            if "ProxiedToDagster" in str((t.get("class_ref") or {}).get("class_name"))
            or "ProxiedToDagster" in str(t.get("operator_name"))
        }
        return shown == proxied

    wait_for(
        f"Airflow to parse the DAG with {sorted(proxied)} proxied", parsed, 240, context=stack.log_tail()
    )


def _materializations_of_run(stack: TutorialStack, key: tuple[str, ...], airflow_run_id: str) -> list[str]:
    """Who recorded `key` for this Airflow run: the Dagster run id of each materialization ('' if sensor)."""
    with stack.dagster() as dagster:
        found = dagster.materializations(key, limit=200)
        proxy_runs = dagster.query(_RUNS_OF_AIRFLOW_RUN, {"value": airflow_run_id})["runsOrError"]["results"]
    proxy_run_ids = {r["runId"] for r in proxy_runs}
    return [
        m.dagster_run_id if m.dagster_run_id in proxy_run_ids else ""
        for m in found
        if m.airflow_run_id == airflow_run_id or m.dagster_run_id in proxy_run_ids
    ]


@pytest.mark.integration
@pytest.mark.airflow3
@pytest.mark.slow
def test_migrate_proxies_the_load_then_rolls_it_back(migrate_stack: TutorialStack) -> None:
    """README section 6 on the demo: load_raw_customers proxied, then back in Airflow; each asset once per run."""
    stack = migrate_stack
    _proxied(stack, "load_raw_customers")
    _wait_for_parse(stack, {"load_raw_customers"})
    run_id = stack.trigger_dag()
    assert stack.wait_for_dag_run(run_id) == "success", stack.log_tail()
    stack.wait_for_materialization(run_id)  # the sensor has read the run and its task instances
    with stack.dagster() as dagster:
        (proxy_run,) = dagster.query(_RUNS_OF_AIRFLOW_RUN, {"value": run_id})["runsOrError"]["results"]
    assert proxy_run["jobName"] == proxy_job_name(INSTANCE, DAG_ID, "load_raw_customers")
    assert proxy_run["status"] == "SUCCESS"
    # The proxied task's asset: once, by Dagster's run; the tasks still in Airflow: once each, by the sensor.
    assert _materializations_of_run(stack, ("raw_data", "raw_customers"), run_id) == [proxy_run["runId"]]
    for key in (*KEYS_OF_TASK["build_dbt_models"], *KEYS_OF_TASK["export_customers"]):
        assert _materializations_of_run(stack, key, run_id) == [""], key
    assert stack.customers_csv.is_file()

    # Rollback: the task runs in Airflow again, and the sensor records its asset again.
    _proxied(stack)
    _wait_for_parse(stack, set())
    run_id = stack.trigger_dag()
    assert stack.wait_for_dag_run(run_id) == "success", stack.log_tail()
    stack.wait_for_materialization(run_id)
    with stack.dagster() as dagster:
        assert dagster.query(_RUNS_OF_AIRFLOW_RUN, {"value": run_id})["runsOrError"]["results"] == []
    for key in ALL_KEYS:
        assert _materializations_of_run(stack, key, run_id) == [""], key
