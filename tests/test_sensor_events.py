"""What the sensor emits, tick by tick, against the in-memory fake Airflow (reliability/fake_airflow.py) and a
real Dagster instance, stored the way the daemon stores it (reliability/ticker.py).

The real-Airflow counterparts are tests/test_sensor_integration.py and tests/reliability/*.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from dagster_airpeer import RUN_STATUS_CHECK_NAME, Dag, DagsterAirflowTranslator
from reliability.fake_airflow import FakeAirflow
from reliability.harness import drain, peer_fake
from reliability.ledger import recorded_events
from reliability.ticker import Ticker


@pytest.fixture
def dagster_instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def fake() -> FakeAirflow:
    fake = FakeAirflow()
    fake.add_dag("alpha")
    fake.add_dag("beta")
    return fake


def _ago(seconds: float) -> datetime:
    return datetime.now(timezone.utc) - timedelta(seconds=seconds)


def _keys(instance: dg.DagsterInstance) -> list[tuple[str, str, str]]:
    return sorted(
        (e.kind, str(e.metadata["airflow/dag_id"].value), str(e.metadata["airflow/run_id"].value))
        for e in recorded_events(instance)
    )


# -- #13.2: one path decides a DAG's key ----------------------------------------------------------------------


class Warehouse(DagsterAirflowTranslator):
    """Changes keys in get_asset_spec only (get_asset_key keeps the default)."""

    def get_asset_spec(self, instance_name: str, dag: Dag, *, dag_url: str, source: str | None = None) -> Any:
        spec = super().get_asset_spec(instance_name, dag, dag_url=dag_url, source=source)
        return spec.replace_attributes(key=dg.AssetKey(["warehouse", dag.dag_id]))


def test_a_dag_added_after_the_load_is_keyed_like_its_asset_will_be(
    fake: FakeAirflow, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    peered = peer_fake(fake, tmp_path / "snap", translator=Warehouse())
    defs = peered.build()
    assert dg.AssetKey(["warehouse", "alpha"]) in defs.resolve_asset_graph().get_all_asset_keys()
    ticker = Ticker(dagster_instance, peered.sensor)
    fake.add_run("new_dag", "r1", _ago(60))  # a DAG Airflow gained after the code location loaded
    drain(ticker, defs)
    materialized = {
        record.asset_key
        for record in dagster_instance.fetch_materializations(
            dg.AssetKey(["warehouse", "new_dag"]), limit=10
        ).records
    }
    # Before #13.2 the run went to af/dag/new_dag (get_asset_key), a key no asset has after the reload.
    assert materialized == {dg.AssetKey(["warehouse", "new_dag"])}
    assert not dagster_instance.fetch_materializations(
        dg.AssetKey(["peered", "dag", "new_dag"]), limit=10
    ).records
    reloaded = peered.build()
    assert dg.AssetKey(["warehouse", "new_dag"]) in reloaded.resolve_asset_graph().get_all_asset_keys()


# -- #13.20: a first import is one event per completion ---------------------------------------------------------


def _check_evaluations(instance: dg.DagsterInstance) -> list[tuple[str, str, bool | None]]:
    return [
        (str(e.metadata["airflow/dag_id"].value), str(e.metadata["airflow/run_id"].value), e.passed)
        for e in recorded_events(instance)
        if e.kind == "check"
    ]


def test_a_first_import_is_one_event_per_completion(
    fake: FakeAirflow, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    for i in range(10):
        fake.add_run(
            "alpha" if i % 2 else "beta", f"r{i}", _ago(300 - i), state="failed" if i == 9 else "success"
        )
    peered = peer_fake(fake, tmp_path / "snap")
    defs = peered.build()
    ticker = Ticker(dagster_instance, peered.sensor)
    first = ticker.tick(defs)
    # Before #13.20: 12 events, each DAG's first recorded success also passed airflow_run_status.
    assert first.events == 10
    assert _check_evaluations(dagster_instance) == [("alpha", "r9", False)]
    # A recovery passes the check again (two events for that completion); later successes are one event.
    fake.add_run("alpha", "r10", _ago(20))
    fake.add_run("alpha", "r11", _ago(10))
    fake.add_run("beta", "r12", _ago(5), state="failed")
    assert ticker.tick(defs).events == 4
    assert sorted(_check_evaluations(dagster_instance)) == [
        ("alpha", "r10", True),
        ("alpha", "r9", False),
        ("beta", "r12", False),
    ]


# -- #13.17: what a killed tick stored is not stored again --------------------------------------------------------


def test_a_tick_killed_mid_recovery_stores_the_missing_event_only(
    fake: FakeAirflow, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    peered = peer_fake(fake, tmp_path / "snap")
    defs = peered.build()
    ticker = Ticker(dagster_instance, peered.sensor)
    fake.add_run("alpha", "failed_1", _ago(60), state="failed")
    ticker.tick(defs)
    fake.add_run("alpha", "recovered", _ago(30))  # a recovery: a materialization and a passing check
    outcome = ticker.tick(defs, crash_after_events=1)  # killed after the materialization
    assert outcome.events == 1 and not outcome.cursor_stored
    replay = ticker.tick(defs)
    assert replay.events == 1  # only the check evaluation
    assert _keys(dagster_instance) == [
        ("check", "alpha", "failed_1"),
        ("check", "alpha", "recovered"),
        ("materialization", "alpha", "recovered"),
    ]
    assert ticker.tick(defs).events == 0


def test_a_killed_first_tick_is_not_doubled(
    fake: FakeAirflow, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    for i in range(6):
        fake.add_run("alpha", f"r{i}", _ago(3600 - i))
    peered = peer_fake(fake, tmp_path / "snap")
    defs = peered.build()
    ticker = Ticker(dagster_instance, peered.sensor)
    assert ticker.tick(defs, crash_after_events=4).events == 4
    assert ticker.cursor is None  # no cursor was stored: the next tick is a first tick again
    assert ticker.tick(defs).events == 2
    assert [k[2] for k in _keys(dagster_instance)] == [f"r{i}" for i in range(6)]


def test_events_of_another_instance_or_outside_airpeer_are_not_taken_for_ours(
    fake: FakeAirflow, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    peered = peer_fake(fake, tmp_path / "snap")
    defs = peered.build()
    ticker = Ticker(dagster_instance, peered.sensor)
    ticker.tick(defs)
    run = fake.add_run("alpha", "r1", _ago(30))
    # The same completion peered by another instance, and an unrelated event, stored in between.
    other = peer_fake(fake, tmp_path / "other", name="other")
    other_ticker = Ticker(dagster_instance, other.sensor)
    other_ticker.tick(other.build())
    dagster_instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=dg.AssetKey(["x"])))
    assert ticker.tick(defs).events == 1
    assert run.run_id in [k[2] for k in _keys(dagster_instance) if k[0] == "materialization"]
    mine = dagster_instance.fetch_materializations(dg.AssetKey(["peered", "dag", "alpha"]), limit=10).records
    assert len(mine) == 1
    completion = mine[0].asset_materialization.metadata["airpeer/completion"].value  # type: ignore[union-attr]
    assert str(completion).startswith("peered:") and len(str(completion)) == len("peered:") + 18


def test_the_tick_log_line_reports_the_cost_of_the_event_log_check(
    fake: FakeAirflow, tmp_path: Path, dagster_instance: dg.DagsterInstance, capfd: pytest.CaptureFixture[str]
) -> None:
    peered = peer_fake(fake, tmp_path / "snap")
    defs = peered.build()
    ticker = Ticker(dagster_instance, peered.sensor)
    ticker.tick(defs)
    for i in range(3):
        fake.add_run("beta", f"b{i}", _ago(30 - i))
    capfd.readouterr()
    ticker.tick(defs)
    out = capfd.readouterr()
    line = next(x for x in (out.err + out.out).splitlines() if "runs ended" in x)
    # The benchmark reads the check's cost from this line.
    assert (
        "-> 3 events" in line
        and "event log check: 0 records in " in line
        and "0 events already stored" in line
    )


def test_a_cursor_reset_skips_what_is_stored_but_reimports_what_was_wiped(
    fake: FakeAirflow, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    fake.add_run("alpha", "ok", _ago(120))
    fake.add_run("beta", "bad", _ago(100), state="failed")
    peered = peer_fake(fake, tmp_path / "snap")
    defs = peered.build()
    ticker = Ticker(dagster_instance, peered.sensor)
    assert ticker.tick(defs).events == 2
    ticker.cursor = None  # "Reset cursor" in the UI: the next tick is a first tick
    assert ticker.tick(defs).events == 0  # both still in Dagster: nothing doubled
    # Dagster's wipe deletes the materializations and the check history but keeps raw check rows: a reset
    # after it imports both again instead of taking the raw row for a stored evaluation.
    dagster_instance.wipe_assets(
        [dg.AssetKey(["peered", "dag", "alpha"]), dg.AssetKey(["peered", "dag", "beta"])]
    )
    ticker.cursor = None
    assert ticker.tick(defs).events == 2
    history = dagster_instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey(["peered", "dag", "beta"]), RUN_STATUS_CHECK_NAME), limit=10
    )
    assert len(history) == 1


# -- #13.5: user checks from a Definitions merged later -----------------------------------------------------------


@dg.asset_check(asset=dg.AssetKey(["peered", "dag", "alpha"]))
def merged_later() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


def test_checks_from_a_definitions_merged_later_are_requested(
    fake: FakeAirflow, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    peered = peer_fake(fake, tmp_path / "snap")
    defs = dg.Definitions.merge(peered.build(), dg.Definitions(asset_checks=[merged_later]))
    ticker = Ticker(dagster_instance, peered.sensor)
    ticker.tick(defs)
    fake.add_run("alpha", "r1", _ago(30))
    fake.add_run("beta", "r2", _ago(20))
    outcome = ticker.tick(defs)
    # Before #13.5 the sensor knew only the checks of defs= and requested nothing.
    assert [list(r.asset_check_keys or []) for r in outcome.run_requests] == [[merged_later.check_key]]
    job = defs.resolve_job_def("peered__dag_asset_checks")
    assert set(job.asset_layer.asset_graph.asset_check_keys) == {merged_later.check_key}


def test_without_user_checks_the_job_selects_nothing_and_nothing_is_requested(
    fake: FakeAirflow, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    peered = peer_fake(fake, tmp_path / "snap")
    defs = peered.build()
    ticker = Ticker(dagster_instance, peered.sensor)
    ticker.tick(defs)
    fake.add_run("alpha", "r1", _ago(30))
    assert ticker.tick(defs).run_requests == []
    assert not defs.resolve_job_def("peered__dag_asset_checks").asset_layer.asset_graph.asset_check_keys
