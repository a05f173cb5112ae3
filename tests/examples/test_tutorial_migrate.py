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
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import dagster as dg
import pytest
from tutorial_helpers import DAG_ID, EXAMPLE_DIR, TutorialStack, TutorialStackManager

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


def _import(path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> ModuleType:
    """Import a stage's file as `dagster dev -f` would, with the tutorial's variables pointing into tmp_path."""
    for name, value in {
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "TUTORIAL_EXAMPLE_DIR": str(EXAMPLE_DIR),
        "TUTORIAL_OUTPUT_DIR": str(tmp_path / "out"),
        **env,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TUTORIAL_DBT_PROJECT_DIR", raising=False)
    spec = importlib.util.spec_from_file_location(f"tutorial_stage_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_standalone_loads_and_its_job_does_the_pipelines_work(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    module = _import(STANDALONE_DEFS, monkeypatch, tmp_path)
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
    module = _import(
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
