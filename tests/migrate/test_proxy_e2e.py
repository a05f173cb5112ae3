"""Migrate end to end: real Airflow 2.11 and 3.3 schedulers, a real `dagster dev` (webserver + daemon).

Per Airflow version, one dedicated Airflow runs the DAGs of `tests/migrate/dags` (on 2.11 the workers import
`dagster_airpeer.in_airflow` from `src` through PYTHONPATH; that venv has no Dagster), with the proxy's
settings (`AIRPEER_DAGSTER_URL`, `AIRPEER_AIRFLOW_INSTANCE`) in the environment of every Airflow process, and
`dagster dev` loads `e2e_defs.py`: the peering of that Airflow, whose mapped assets are real `@asset`s, so the
proxy jobs exist and the peering sensor runs under the daemon.

The proxied state is a directory of YAML files the tests rewrite; the DAG file is touched so that Airflow
parses it again, and a test waits until Airflow's REST API lists the task classes it expects
(`<original>ProxiedToDagster` for a proxied task) before triggering a run.

"Exactly once per Airflow task run": every materialization of a mapped asset is attributed to an Airflow run,
by the sensor's metadata (`airflow/dag_id`, `airflow/run_id`) or by the tags of the Dagster run that made it
(`airpeer/dag_id`, `airpeer/run_id`); each asset must have one, from Dagster when its task was proxied and from
the sensor when not, after the sensor has seen the DAG run end and ticked twice more. A timed-out proxied
task must leave its Dagster run CANCELED.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from dagster_airpeer.in_airflow.naming import PROXIED_OPERATOR_SUFFIX
from devtools.airflow_stack import AirflowStack, AirflowStackError, free_port
from devtools.dagster_dev import DagsterDevError, dagster_dev, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
INSTANCE = "mig"
STEPS, RETRY, BROKEN = "airpeer_mig_steps", "airpeer_mig_retry", "airpeer_mig_broken"
TIMED_OUT = "airpeer_mig_timeout"
EXTRACTED, LOADED = dg.AssetKey("mig_extracted"), dg.AssetKey("mig_loaded")
WAITED, BROKEN_KEY, HELD = dg.AssetKey("mig_waited"), dg.AssetKey("mig_broken"), dg.AssetKey("mig_held")
SENSOR = f"{INSTANCE}__airflow_dag_runs"
TIMEOUT = 180.0


def _wait_for(predicate: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
    """Poll until `predicate()` is truthy and return it (a bounded wait on an event, not a fixed sleep)."""
    try:
        return wait_for(predicate, what, timeout)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


@dataclass
class E2E:
    """One Airflow version with its `dagster dev`, and what the tests change between runs."""

    airflow: AirflowStack
    dagster_url: str
    instance: dg.DagsterInstance
    state_dir: Path
    release: Path
    dagster_log: Path

    # -- Airflow -------------------------------------------------------------------------------------------

    def set_state(self, dag_id: str, yaml_text: str, file: str, proxied: set[str]) -> None:
        """Write the DAG's proxied state, make Airflow parse its file again, wait until it shows `proxied`."""
        (self.state_dir / f"{dag_id}.yaml").write_text(yaml_text)
        dag_file = self.airflow.dags_folder / file
        # A newer mtime: Airflow reparses a changed file at once, an unchanged one only every 30 s.
        stamp = time.time()
        os.utime(dag_file, (stamp, stamp))

        def shown() -> bool:
            with self.airflow.client() as http:
                answer = http.get(f"/dags/{dag_id}/tasks")
            if answer.status_code != 200:
                return False
            classes = {t["task_id"]: t["class_ref"]["class_name"] for t in answer.json()["tasks"]}
            return {t for t, c in classes.items() if c.endswith(PROXIED_OPERATOR_SUFFIX)} == proxied

        _wait_for(shown, f"Airflow to parse {file} again with tasks {sorted(proxied)} proxied")

    def run_dag(self, dag_id: str) -> tuple[str, str]:
        """Trigger a run; its id and final state."""
        run_id = f"e2e_{uuid.uuid4().hex[:8]}"
        self.airflow.trigger_dag_run(dag_id, run_id=run_id)
        return run_id, self.airflow.wait_for_dag_run(dag_id, run_id, timeout=TIMEOUT)

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        with self.airflow.client() as http:
            answer = http.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
        answer.raise_for_status()
        ti: dict[str, Any] = answer.json()
        return ti

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        """The task log of one try, as text, through the REST API."""
        with self.airflow.client() as http:
            answer = http.get(
                f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
                params={"full_content": "true"},
                headers={"Accept": "application/json"},
            )
        answer.raise_for_status()
        content = answer.json()["content"]
        if isinstance(content, str):
            # Airflow 2.11: the repr of a list of (host, text) pairs.
            with contextlib.suppress(ValueError, SyntaxError):
                content = "\n".join(str(text) for _host, text in ast.literal_eval(content))
            return str(content)
        # Airflow 3: structured lines.
        return "\n".join(json.dumps(line) if not isinstance(line, str) else line for line in content)

    # -- Dagster -------------------------------------------------------------------------------------------

    def sources(self, key: dg.AssetKey, dag_id: str, run_id: str) -> list[str]:
        """Who materialized `key` for Airflow run `run_id` of `dag_id`: "sensor" or "dagster", once each time."""
        found = []
        for record in self.instance.fetch_materializations(key, limit=1000).records:
            materialization = record.asset_materialization
            assert materialization is not None
            metadata = materialization.metadata
            if "airflow/run_id" in metadata:
                if (metadata["airflow/run_id"].value, metadata["airflow/dag_id"].value) == (run_id, dag_id):
                    found.append("sensor")
                continue
            run = self.instance.get_run_by_id(record.run_id)
            tags = run.tags if run is not None else {}
            if (tags.get("airpeer/run_id"), tags.get("airpeer/dag_id")) == (run_id, dag_id):
                found.append("dagster")
        return found

    def proxy_runs(self, dag_id: str, run_id: str, task_id: str) -> list[dg.DagsterRun]:
        """The Dagster runs the proxy launched for one Airflow task run (any try)."""
        tags = {
            "airpeer/airflow_instance": INSTANCE,
            "airpeer/dag_id": dag_id,
            "airpeer/run_id": run_id,
            "airpeer/task_id": task_id,
        }
        return list(self.instance.get_runs(dg.RunsFilter(tags=tags)))

    def sensor_ticks(self) -> int:
        states = [s for s in self.instance.all_instigator_state() if s.name == SENSOR]
        if not states:
            return 0
        return len(
            self.instance.get_ticks(states[0].instigator_origin_id, states[0].selector_id, limit=10000)
        )

    def wait_sensor_saw(self, dag_id: str, run_id: str) -> None:
        """Wait until the sensor recorded the DAG run's success, then two more ticks (nothing more may come)."""
        dag_key = dg.AssetKey([INSTANCE, "dag", dag_id])
        _wait_for(
            lambda: (
                any(
                    r.asset_materialization is not None
                    and getattr(r.asset_materialization.metadata.get("airflow/run_id"), "value", None)
                    == run_id
                    for r in self.instance.fetch_materializations(dag_key, limit=1000).records
                )
                or None
            ),
            f"the peering sensor to record run {run_id} of {dag_id} (log {self.dagster_log})",
        )
        ticks = self.sensor_ticks()
        _wait_for(lambda: self.sensor_ticks() >= ticks + 2, "two more sensor ticks")


INITIAL_STATE = {
    STEPS: "tasks:\n  - id: extract\n    proxied: false\n  - id: load\n    proxied: false\n",
    RETRY: "proxied: true\n",
    BROKEN: "tasks:\n  - id: broken\n    proxied: true\n",
    TIMED_OUT: "proxied: true\n",
}


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(3, id="af3", marks=pytest.mark.airflow3),
        pytest.param(2, id="af2", marks=pytest.mark.airflow2),
    ],
)
def e2e(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    major: int = request.param
    tmp = tmp_path_factory.mktemp(f"migrate_e2e_af{major}")
    dags, state = tmp / "dags", tmp / "proxied_state"
    shutil.copytree(HERE / "dags", dags, ignore=shutil.ignore_patterns("__pycache__"))
    state.mkdir()
    for dag_id, text in INITIAL_STATE.items():
        (state / f"{dag_id}.yaml").write_text(text)
    release = tmp / "release"
    dagster_port = free_port()
    dagster_url = f"http://127.0.0.1:{dagster_port}"
    airflow = AirflowStack(
        major=major,
        home=tmp / "airflow_home",
        dags_folder=dags,
        extra_env={
            # Airflow 2.11's venv has no airpeer: its workers import the Airflow side from the source tree.
            "PYTHONPATH": str(ROOT / "src"),
            "AIRPEER_DAGSTER_URL": dagster_url,
            "AIRPEER_AIRFLOW_INSTANCE": INSTANCE,
            "AIRPEER_TEST_PROXIED_STATE": str(state),
            # Airflow 2 fails a task whose process was killed when it finds it a "zombie": look often.
            "AIRFLOW__SCHEDULER__ZOMBIE_DETECTION_INTERVAL": "2",
        },
    )
    try:
        airflow.start()
        airflow.wait_for_dags([STEPS, RETRY, BROKEN, TIMED_OUT])
    except AirflowStackError as exc:
        airflow.stop()
        pytest.fail(f"Airflow {airflow.version_label} did not start: {exc}", pytrace=False)
    # A copy: every Dagster run loads the code location again, and must not see an edit made meanwhile.
    defs = Path(shutil.copy(HERE / "e2e_defs.py", tmp / "e2e_defs.py"))
    env = {
        "AIRPEER_TEST_AIRFLOW_URL": airflow.url,
        "AIRPEER_TEST_AIRFLOW_USER": airflow.username,
        "AIRPEER_TEST_AIRFLOW_PASSWORD": airflow.password,
        "AIRPEER_TEST_RELEASE": str(release),
    }
    try:
        with (
            dagster_dev(tmp, defs, env, port=dagster_port, timeout=TIMEOUT) as dev,
            dg.DagsterInstance.from_config(str(dev.home)) as instance,
        ):
            yield E2E(airflow, dev.url, instance, state, release, dev.log)
    except DagsterDevError as exc:
        pytest.fail(str(exc), pytrace=False)
    finally:
        airflow.stop()


def _steps_state(extract: bool, load: bool) -> str:
    return (
        f"tasks:\n  - id: extract\n    proxied: {str(extract).lower()}\n"
        f"  - id: load\n    proxied: {str(load).lower()}\n"
    )


def _expected(proxied: bool) -> list[str]:
    return ["dagster"] if proxied else ["sensor"]


def test_one_task_proxied_then_all_then_one_rolled_back(e2e: E2E) -> None:
    runs: list[tuple[str, bool, bool]] = []
    for extract, load in [(True, False), (True, True), (False, True)]:
        proxied = {t for t, on in (("extract", extract), ("load", load)) if on}
        e2e.set_state(STEPS, _steps_state(extract, load), "airpeer_mig_dags.py", proxied)
        run_id, state = e2e.run_dag(STEPS)
        assert state == "success", (proxied, run_id)
        for task_id in ("extract", "load"):
            operator = e2e.task_instance(STEPS, run_id, task_id)["operator"]
            assert operator.endswith(PROXIED_OPERATOR_SUFFIX) == (task_id in proxied), (task_id, operator)
            launched = e2e.proxy_runs(STEPS, run_id, task_id)
            assert [r.status for r in launched] == (
                [dg.DagsterRunStatus.SUCCESS] if task_id in proxied else []
            )
        runs.append((run_id, extract, load))
    # The sensor has seen the last run end (and so the earlier ones) and ticked twice more: counted now.
    e2e.wait_sensor_saw(STEPS, runs[-1][0])
    for run_id, extract, load in runs:
        assert e2e.sources(EXTRACTED, STEPS, run_id) == _expected(extract), (run_id, extract, load)
        assert e2e.sources(LOADED, STEPS, run_id) == _expected(load), (run_id, extract, load)


def test_the_whole_dag_proxied(e2e: E2E) -> None:
    e2e.set_state(STEPS, "proxied: true\n", "airpeer_mig_dags.py", {"extract", "load"})
    run_id, state = e2e.run_dag(STEPS)
    assert state == "success"
    e2e.wait_sensor_saw(STEPS, run_id)
    assert e2e.sources(EXTRACTED, STEPS, run_id) == ["dagster"]
    assert e2e.sources(LOADED, STEPS, run_id) == ["dagster"]
    # Dagster ran extract's asset in extract's run and load's in load's: one run per Airflow task.
    assert [len(e2e.proxy_runs(STEPS, run_id, t)) for t in ("extract", "load")] == [1, 1]


def test_an_airflow_retry_attaches_to_the_same_dagster_run(e2e: E2E) -> None:
    run_id = f"e2e_{uuid.uuid4().hex[:8]}"
    e2e.airflow.trigger_dag_run(RETRY, run_id=run_id)
    # Try 1 launches the run (held by mig_waited until released) and its process is killed.
    first = _wait_for(lambda: e2e.proxy_runs(RETRY, run_id, "wait"), "the first try's Dagster run")
    _wait_for(
        lambda: (
            (ti := e2e.task_instance(RETRY, run_id, "wait"))["try_number"] >= 2 and ti["state"] == "running"
        ),
        "Airflow's second try of the killed task to run",
    )
    e2e.release.touch()
    assert e2e.airflow.wait_for_dag_run(RETRY, run_id, timeout=TIMEOUT) == "success"
    runs = e2e.proxy_runs(RETRY, run_id, "wait")
    assert [r.run_id for r in runs] == [first[0].run_id]
    assert runs[0].status == dg.DagsterRunStatus.SUCCESS
    assert runs[0].tags["airpeer/try_number"] == "1"
    ti = e2e.task_instance(RETRY, run_id, "wait")
    assert ti["try_number"] == 2 and ti["state"] == "success"
    assert f"Attaching to Dagster run {runs[0].run_id}" in e2e.task_log(RETRY, run_id, "wait", 2)
    e2e.wait_sensor_saw(RETRY, run_id)
    assert e2e.sources(WAITED, RETRY, run_id) == ["dagster"]


def test_a_failing_dagster_step_fails_the_airflow_task_with_its_message(e2e: E2E) -> None:
    run_id, state = e2e.run_dag(BROKEN)
    assert state == "failed"
    ti = e2e.task_instance(BROKEN, run_id, "broken")
    assert ti["state"] == "failed"
    (run,) = e2e.proxy_runs(BROKEN, run_id, "broken")
    assert run.status == dg.DagsterRunStatus.FAILURE
    log = e2e.task_log(BROKEN, run_id, "broken", ti["try_number"])
    assert "step 'mig_broken' failed" in log and "row 7 has no customer id" in log, log[-3000:]
    assert f"{e2e.dagster_url}/runs/{run.run_id}" in log
    assert e2e.sources(BROKEN_KEY, BROKEN, run_id) == []


def test_an_airflow_timeout_terminates_the_dagster_run(e2e: E2E) -> None:
    run_id, state = e2e.run_dag(TIMED_OUT)
    assert state == "failed"
    (run,) = e2e.proxy_runs(TIMED_OUT, run_id, "held")
    done = {dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.SUCCESS}
    final = _wait_for(
        lambda: (
            (found := e2e.instance.get_run_by_id(run.run_id)) is not None and found.status in done and found
        ),
        "the Dagster run of the timed-out task to end",
        timeout=90,
    )
    assert final.status == dg.DagsterRunStatus.CANCELED
    assert f"Terminated Dagster run {run.run_id}" in e2e.task_log(TIMED_OUT, run_id, "held", 1)
    assert e2e.sources(HELD, TIMED_OUT, run_id) == []
