"""`proxy_jobs`: the Dagster job a proxied task launches, named as the proxy in Airflow computes it."""

from __future__ import annotations

import dagster as dg

from dagster_airpeer.in_airflow.naming import proxy_job_name
from dagster_airpeer.migrate import proxy_jobs
from dagster_airpeer.observe.events import TASK_STATUS_CHECK_NAME
from dagster_airpeer.observe.index import ObservedMappings

DAILY = dg.DailyPartitionsDefinition(start_date="2024-01-01")


@dg.asset(key=["raw", "customers"])
def raw_customers() -> None:
    pass


@dg.asset_check(asset=raw_customers)
def has_rows() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


@dg.asset_check(asset=raw_customers, name=TASK_STATUS_CHECK_NAME)
def status_from_airflow() -> dg.AssetCheckResult:  # pragma: no cover - must not run in a proxy job
    raise AssertionError("airflow_task_status is reported by the sensor, never run")


@dg.asset(partitions_def=DAILY)
def daily() -> None:
    pass


MAPPINGS = ObservedMappings(
    instance_name="af",
    keys_by_task={
        ("rebuild", "load"): (dg.AssetKey(["raw", "customers"]), dg.AssetKey("observed_only")),
        ("rebuild", "observe.only"): (dg.AssetKey("observed_only"),),
        ("rebuild", "daily"): (dg.AssetKey("daily"),),
    },
)


def _defs() -> dg.Definitions:
    user = dg.Definitions(
        assets=[raw_customers, daily, dg.AssetSpec("observed_only")],
        asset_checks=[has_rows, status_from_airflow],
    )
    return dg.Definitions.merge(user, dg.Definitions(jobs=proxy_jobs(MAPPINGS, user)))


def test_one_job_per_task_with_executable_assets_named_as_the_proxy_names_it() -> None:
    names = {job.name for job in proxy_jobs(MAPPINGS, _defs())}
    assert names == {proxy_job_name("af", "rebuild", "load"), proxy_job_name("af", "rebuild", "daily")}


def test_the_job_materializes_the_tasks_assets_and_runs_their_checks_but_not_airflow_task_status() -> None:
    job = _defs().resolve_job_def(proxy_job_name("af", "rebuild", "load"))
    result = job.execute_in_process()
    assert result.success
    materialized = {event.asset_key for event in result.get_asset_materialization_events()}
    assert materialized == {dg.AssetKey(["raw", "customers"])}
    checks = {e.check_name for e in result.get_asset_check_evaluations()}
    assert checks == {"has_rows"}
    assert job.tags["airpeer/dag_id"] == "rebuild" and job.tags["airpeer/task_id"] == "load"


def test_a_time_partitioned_job_tells_the_proxy_how_to_name_the_partition() -> None:
    job = _defs().resolve_job_def(proxy_job_name("af", "rebuild", "daily"))
    assert job.tags["airpeer/partition_fmt"] == "%Y-%m-%d"
    assert job.tags["airpeer/partition_timezone"] == "UTC"
    assert job.execute_in_process(partition_key="2024-01-02").success
