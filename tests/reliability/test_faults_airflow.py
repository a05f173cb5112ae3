"""Faults against a real Airflow: the api-server killed between two pages, DAGs paused, deleted or renamed
while peered, runs deleted after they were recorded.

Each test compares what the sensor stored in Dagster with what Airflow itself lists as completed (read with
plain httpx, `reliability.oracle`), over the same time span: nothing lost, nothing doubled.
"""

from __future__ import annotations

import textwrap
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from dagster_airpeer import AirflowBasicAuthBackend, AirflowConnectionError, AirflowInstance
from reliability import oracle
from reliability.faults import Fault, FaultTransport, network_transport
from reliability.harness import drain, peer, seed_finished_runs, spaced_runs
from reliability.ledger import compare, primary_counts, recorded_events
from reliability.ticker import Ticker

pytestmark = pytest.mark.integration

LOOKBACK = timedelta(hours=2)


def _verdict(stack: Any, instance: dg.DagsterInstance, since: datetime) -> Any:
    return compare(oracle.completions(stack, since), recorded_events(instance), since=since)


def test_api_server_killed_between_pages_then_restarted(
    airflow: Any, seeded: Any, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    """Killed while the first tick pages through 60+ runs 5 at a time; two ticks and a code location reload
    while it is down; restarted; drained. Every completion of the last two hours arrives exactly once."""
    since = datetime.now(timezone.utc) - LOOKBACK + timedelta(minutes=5)
    killed: list[float] = []

    def kill() -> None:
        airflow.stop_api_server()
        killed.append(1.0)

    transport = FaultTransport(network_transport(), {4: Fault("hook", hook=kill)})
    peered = peer(
        airflow.url,
        airflow.username,
        airflow.password,
        tmp_path / "snap",
        transport=transport,
        page_size=5,
        max_retries=2,
        max_parallel_requests=1,  # the 4th request is then the 4th page, the first three are delivered
        real_sleep=True,
        lookback=LOOKBACK,
        late_commit_window=timedelta(seconds=60),
    )
    defs = peered.build()
    ticker = Ticker(dagster_instance, peered.sensor)
    try:
        first = ticker.tick(defs, raise_errors=False)
        assert killed, "the api-server was not killed mid-tick"
        # Pages 1-3 were read before the kill: delivered, and the tick itself did not fail.
        assert not first.failed and first.events > 0
        interrupted_cursor = ticker.cursor
        for _ in range(2):
            down = ticker.tick(peered.build(), raise_errors=False)  # reload: served from the snapshot
            assert down.failed and isinstance(down.error, AirflowConnectionError)
            assert airflow.url in str(down.error) and "'peered'" in str(down.error)
            assert ticker.cursor == interrupted_cursor
    finally:
        airflow.start_api_server()
    outcomes = drain(ticker, peered.build())
    assert not any(o.failed for o in outcomes), [o.error for o in outcomes]
    verdict = _verdict(airflow, dagster_instance, since)
    assert verdict.ok, verdict.summary() + f" lost={verdict.lost[:5]} doubled={verdict.doubled[:5]}"
    assert set(seeded.run_ids) <= {c[1] for c in oracle.completions(airflow, since)}
    assert verdict.completions >= 60


# -- DAG lifecycle (Airflow 3; the REST paths involved are the same on 2) ----------------------------------


def _dag_file(folder: Path, file_stem: str, dag_id: str) -> Path:
    path = folder / f"{file_stem}.py"
    path.write_text(
        textwrap.dedent(
            f'''
            """Written by tests/reliability/test_faults_airflow.py."""
            from datetime import datetime, timezone
            from airflow.providers.standard.operators.empty import EmptyOperator
            from airflow.sdk import DAG

            with DAG(dag_id={dag_id!r}, schedule=None, start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
                     catchup=False, is_paused_upon_creation=False, tags=["airpeer", "reliability"]):
                EmptyOperator(task_id="noop")
            '''
        )
    )
    return path


def _one_run(dag_id: str, run_id: str, minutes_ago: float, state: str = "success") -> dict[str, Any]:
    end = datetime.now(timezone.utc) - timedelta(minutes=minutes_ago)
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "state": state,
        "start": (end - timedelta(seconds=30)).isoformat(),
        "end": end.isoformat(),
    }


def _asset_keys_for_run(instance: dg.DagsterInstance, dag_ids: list[str], run_id: str) -> set[dg.AssetKey]:
    keys = set()
    for dag_id in dag_ids:
        key = dg.AssetKey(["peered", "dag", dag_id])
        for record in instance.fetch_materializations(key, limit=100).records:
            materialization = record.asset_materialization
            if materialization and materialization.metadata["airflow/run_id"].value == run_id:  # type: ignore[union-attr]
                keys.add(key)
    return keys


def test_dags_paused_deleted_and_renamed_while_peered(
    airflow3: Any, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    stack = airflow3
    tag = uuid.uuid4().hex[:6]
    gone, old, new, ghost = (f"rel_{k}_{tag}" for k in ("gone", "old", "new", "ghost"))
    gone_file = _dag_file(stack.dags_folder, f"rel_gone_{tag}", gone)
    _dag_file(stack.dags_folder, f"rel_renamed_{tag}", old)
    client = AirflowInstance(
        AirflowBasicAuthBackend(stack.url, stack.username, stack.password), name="client"
    )
    try:
        stack.wait_for_dags([gone, old], timeout=180)
        since = datetime.now(timezone.utc) - timedelta(minutes=30)
        peered = peer(
            stack.url, stack.username, stack.password, tmp_path / "snap",
            lookback=timedelta(minutes=30), late_commit_window=timedelta(minutes=10),
        )  # fmt: skip
        defs = peered.build()  # the code location knows `gone` and `old`
        ticker = Ticker(dagster_instance, peered.sensor)
        drain(ticker, defs)

        # Runs end, then their DAGs change before the next tick. (Seeded rows appear at once with an end
        # date in the past: a late commit, which the window must cover.)
        seed_finished_runs(
            stack,
            [
                _one_run(gone, f"gone_run_{tag}", 4),
                _one_run(old, f"old_run_{tag}", 3.5),
                _one_run("airpeer_ok", f"paused_run_{tag}", 3),
            ],
            tmp_path / "seed",
        )
        client.set_paused("airpeer_ok", True)
        gone_file.unlink()  # DAG file deleted: the DAG goes stale in Airflow, its runs stay
        _dag_file(stack.dags_folder, f"rel_renamed_{tag}", new)  # same file, new dag_id
        stack.wait_for_dags([new], timeout=180)
        seed_finished_runs(stack, [_one_run(new, f"new_run_{tag}", 1)], tmp_path / "seed")
        # A run whose DAG Airflow never knew (deleted with its file before the code location ever saw it).
        try:
            seed_finished_runs(stack, [_one_run(ghost, f"ghost_run_{tag}", 2)], tmp_path / "seed")
            ghost_seeded = True
        except RuntimeError:
            ghost_seeded = False  # the database refuses runs of unknown DAGs: nothing to record then

        drain(ticker, defs)
        verdict = _verdict(stack, dagster_instance, since)
        assert verdict.ok, verdict.summary()
        assert _asset_keys_for_run(dagster_instance, [gone], f"gone_run_{tag}") == {
            dg.AssetKey(["peered", "dag", gone])
        }
        assert _asset_keys_for_run(dagster_instance, [old, new], f"old_run_{tag}") == {
            dg.AssetKey(["peered", "dag", old])
        }
        # The renamed DAG's new runs go under the new DAG's key before the code location even reloads.
        assert _asset_keys_for_run(dagster_instance, [old, new], f"new_run_{tag}") == {
            dg.AssetKey(["peered", "dag", new])
        }
        assert _asset_keys_for_run(dagster_instance, ["airpeer_ok"], f"paused_run_{tag}")
        listed = {c[1] for c in oracle.completions(stack, since)}
        if ghost_seeded and f"ghost_run_{tag}" in listed:
            assert _asset_keys_for_run(dagster_instance, [ghost], f"ghost_run_{tag}") == {
                dg.AssetKey(["peered", "dag", ghost])
            }
        # (Airflow 3.3 does not list runs of a DAG it has no record of: such a run is invisible to its REST
        # API and to every client, so there is nothing to record.)
        # A reload of the code location (the DAG list changed) and more ticks change nothing.
        drain(ticker, peered.build())
        assert _verdict(stack, dagster_instance, since).ok
    finally:
        client.set_paused("airpeer_ok", False)
        for path in stack.dags_folder.glob(f"rel_*_{tag}.py"):
            path.unlink()


def test_runs_deleted_after_they_were_recorded_stay_recorded_once(
    airflow: Any, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    """Runs deleted in Airflow after a tick recorded them, inside and outside the late-commit window."""
    tag = uuid.uuid4().hex[:6]
    runs = spaced_runs(
        "airpeer_two_tasks",
        f"rel_del_{tag}",
        12,
        end_last=datetime.now(timezone.utc) - timedelta(seconds=5),
        spacing=timedelta(seconds=30),
    )
    seed_finished_runs(airflow, runs, tmp_path / "seed")
    since = datetime.now(timezone.utc) - timedelta(minutes=20)
    peered = peer(
        airflow.url, airflow.username, airflow.password, tmp_path / "snap", page_size=4,
        lookback=timedelta(minutes=20), late_commit_window=timedelta(minutes=2),
    )  # fmt: skip
    defs = peered.build()
    ticker = Ticker(dagster_instance, peered.sensor)
    drain(ticker, defs)
    before = _verdict(airflow, dagster_instance, since)
    assert before.ok, before.summary()
    # Delete every other run: some are older than the window, some are still re-read each tick.
    for run in runs[::2]:
        peered.instance.delete_dag_run(run["dag_id"], run["run_id"])
    outcomes = drain(ticker, defs)
    assert not any(o.failed for o in outcomes)
    assert sum(o.events for o in outcomes) == 0
    recorded = Counter(c[1] for c in primary_counts(recorded_events(dagster_instance)).elements())
    for run in runs:
        assert recorded[run["run_id"]] == 1, run["run_id"]
