"""Malformed or unexpected answers from Airflow: a clear error or a documented handling, never a lost run.

Served by the in-memory Airflow (`reliability.fake_airflow`), which sorts and filters its rows by their real
end dates but sends whatever wire dictionary a test gives a row: that is how a real server behaves when it
serialises a row its own schema does not expect. 60 finished runs, 10 per page.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from dagster_airpeer import AirflowResponseError
from reliability.fake_airflow import FakeAirflow, iso
from reliability.harness import drain, peer_fake
from reliability.ledger import compare, recorded_events
from reliability.ticker import Ticker


def _peer(fake: FakeAirflow, tmp_path: Path, instance: dg.DagsterInstance) -> tuple[Ticker, dg.Definitions]:
    peered = peer_fake(fake, tmp_path / "snap", page_size=10)
    return Ticker(instance, peered.sensor), peered.build()


def _verdict(fake: FakeAirflow, instance: dg.DagsterInstance) -> Any:
    return compare(fake.completions(), recorded_events(instance))


@pytest.mark.parametrize("field", ["dag_run_id", "dag_id", "state"])
@pytest.mark.parametrize("position", [3, 25], ids=["first-page", "later-page"])
def test_a_run_missing_a_field_stops_the_feed_at_it_with_a_clear_error_and_loses_nothing(
    field: str, position: int, fake: FakeAirflow, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    broken = sorted(fake.runs, key=lambda r: (r.end, r.pk))[position]
    saved = dict(broken.wire)
    del broken.wire[field]
    ticker, defs = _peer(fake, tmp_path, dagster_instance)
    outcomes = [ticker.tick(defs, raise_errors=False) for _ in range(4)]
    # The broken page is never skipped: every tick that reaches it stops there, naming endpoint and field.
    errors = [o.error for o in outcomes if o.failed]
    assert errors, "a malformed page was accepted"
    assert all(isinstance(e, AirflowResponseError) for e in errors)
    assert re.search(rf"field `dag_runs\[\d+\]\.{field}`", str(errors[0])), str(errors[0])
    assert "dagRuns/list" in str(errors[0])
    assert broken.run_id not in {e.completion[1] for e in recorded_events(dagster_instance)}
    # Airflow answers properly again: everything arrives, once.
    broken.wire.clear()
    broken.wire.update(saved)
    drain(ticker, defs)
    verdict = _verdict(fake, dagster_instance)
    assert verdict.ok and verdict.completions == 60, verdict.summary()


def test_an_unknown_terminal_state_is_recorded_as_a_failed_run_naming_the_state(
    fake: FakeAirflow, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    """A newer Airflow could add a terminal state: the run shows as a failing check naming it, never dropped."""
    odd = fake.runs[40]
    odd.wire["state"] = "partially_succeeded"
    ticker, defs = _peer(fake, tmp_path, dagster_instance)
    drain(ticker, defs)
    verdict = _verdict(fake, dagster_instance)
    assert verdict.ok, verdict.summary()
    [event] = [e for e in recorded_events(dagster_instance) if e.completion[1] == odd.run_id]
    assert event.kind == "check" and event.passed is False
    assert event.metadata["airflow/run_state"].value == "partially_succeeded"


def test_a_run_without_an_end_date_inside_a_page_is_not_a_completion_yet(
    fake: FakeAirflow, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    """A null end date in the middle of a page: that run waits for its end date, the others are delivered."""
    ordered = sorted(fake.runs, key=lambda r: (r.end, r.pk))
    odd = ordered[33]  # inside a page, not its first or last item
    odd.wire["end_date"] = None
    ticker, defs = _peer(fake, tmp_path, dagster_instance)
    drain(ticker, defs)
    delivered = {e.completion[1] for e in recorded_events(dagster_instance)}
    assert delivered == {r.run_id for r in fake.runs} - {odd.run_id}
    # Airflow records its end (within the late-commit window, as a late commit would): it is delivered once.
    odd.end = datetime.now(timezone.utc) - timedelta(seconds=20)
    odd.wire["end_date"] = iso(odd.end)
    drain(ticker, defs)
    verdict = _verdict(fake, dagster_instance)
    assert verdict.ok and verdict.completions == 60, verdict.summary()


def test_a_run_without_an_end_date_at_the_end_of_a_page_loses_nothing(
    fake: FakeAirflow, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    ordered = sorted(fake.runs, key=lambda r: (r.end, r.pk))
    odd = ordered[9]  # the last item of the first page
    odd.wire["end_date"] = None
    ticker, defs = _peer(fake, tmp_path, dagster_instance)
    drain(ticker, defs)
    delivered = {e.completion[1] for e in recorded_events(dagster_instance)}
    missing = {r.run_id for r in fake.runs} - {odd.run_id} - delivered
    assert not missing, f"{len(missing)} runs after the null end date were never delivered"


def test_null_start_and_logical_dates_and_an_end_before_the_start_are_recorded(
    fake: FakeAirflow, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    no_start, backwards = fake.runs[20], fake.runs[21]
    no_start.wire.update(start_date=None, queued_at=None, logical_date=None)
    assert backwards.end is not None
    backwards.wire["start_date"] = iso(backwards.end + timedelta(minutes=3))
    ticker, defs = _peer(fake, tmp_path, dagster_instance)
    drain(ticker, defs)
    verdict = _verdict(fake, dagster_instance)
    assert verdict.ok and verdict.completions == 60, verdict.summary()
    by_run = {e.completion[1]: e for e in recorded_events(dagster_instance)}
    assert "airflow/duration_seconds" not in by_run[no_start.run_id].metadata
    # Documented: a negative duration is shown rather than the run dropped.
    assert by_run[backwards.run_id].metadata["airflow/duration_seconds"].value == -180.0


@pytest.mark.parametrize(
    "dag_id",
    ["team/etl", "with spaces", "unicodé_データ", "a/b c/ü"],
    ids=["slash", "spaces", "unicode", "all"],
)
@pytest.mark.parametrize("known", [True, False], ids=["in-snapshot", "added-after-load"])
def test_odd_dag_and_run_ids_are_recorded_under_distinct_keys(
    dag_id: str, known: bool, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    """Airflow's own id rules forbid these, but a plugin or an older version may serve them."""
    fake = FakeAirflow()
    fake.add_dag("plain")
    if known:
        fake.add_dag(dag_id)
    now = datetime.now(timezone.utc)
    peered = peer_fake(fake, tmp_path / "snap", page_size=10)
    defs = peered.build()
    if not known:
        fake.add_dag(dag_id)  # appears in Airflow after the code location loaded
    fake.add_run(dag_id, "run/with slash é", now - timedelta(minutes=9))
    fake.add_run(dag_id, "second run", now - timedelta(minutes=8), state="failed")
    fake.add_run("plain", "run/with slash é", now - timedelta(minutes=7))
    ticker = Ticker(dagster_instance, peered.sensor)
    drain(ticker, defs)
    verdict = _verdict(fake, dagster_instance)
    assert verdict.ok and verdict.completions == 3, verdict.summary()
    events = recorded_events(dagster_instance)
    url = next(e.metadata["airflow/run_url"].value for e in events if e.completion[0] == dag_id)
    assert " " not in url and "/runs/" in url
    # The resolver asked Airflow for the unknown DAG with its id quoted into one path segment.
    if not known:
        assert ("GET", f"/api/v2/dags/{dag_id}") in fake.requests
    keys = {
        record.asset_key
        for record in dagster_instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(["peered", "dag", "plain"])), limit=10
        ).records
    }
    assert keys == {dg.AssetKey(["peered", "dag", "plain"])}


def test_a_10000_character_conf_is_recorded_and_shown_truncated(
    fake: FakeAirflow, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    big = fake.runs[30]
    big.wire["conf"] = {"payload": "x" * 10_000, "nested": {"k": list(range(50))}}
    ticker, defs = _peer(fake, tmp_path, dagster_instance)
    drain(ticker, defs)
    verdict = _verdict(fake, dagster_instance)
    assert verdict.ok and verdict.completions == 60, verdict.summary()
    [event] = [e for e in recorded_events(dagster_instance) if e.completion[1] == big.run_id]
    shown = str(event.metadata["airflow/conf"].value)
    assert len(shown) < 4200 and "truncated" in shown
    assert len(json.dumps(big.wire["conf"])) > 10_000


def test_a_timestamp_without_timezone_is_a_clear_error(
    fake: FakeAirflow, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    naive = fake.runs[30]
    assert naive.end is not None
    naive.wire["end_date"] = naive.end.replace(tzinfo=None).isoformat()
    ticker, defs = _peer(fake, tmp_path, dagster_instance)
    outcomes = drain(ticker, defs, max_ticks=3)
    errors = [o.error for o in outcomes if o.failed]
    assert errors and all(isinstance(e, AirflowResponseError) for e in errors), errors
