"""The proxy against a real `dagster dev` (webserver + daemon): launch, attach on retry, a failing step's error.

The code location defines the proxy jobs with `proxy_jobs` from hand-made mappings (no Airflow needed on the
Dagster side). The proxy runs from this venv, then from the Dagster-free Airflow 2.11 venv through a proxied
task's own `execute`, so the operator's context handling meets real Dagster too.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dagster_airpeer.in_airflow import client as c
from devtools.dagster_dev import dagster_dev

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW2_PYTHON = ROOT / ".venvs" / "airflow2" / "bin" / "python"

DEFS = textwrap.dedent(
    """
    import dagster as dg
    from dagster_airpeer.migrate import proxy_jobs
    from dagster_airpeer.observe.index import ObservedMappings

    @dg.asset
    def loaded() -> None:
        pass

    @dg.asset_check(asset=loaded)
    def loaded_ok() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True)

    @dg.asset
    def broken() -> None:
        raise ValueError("row 7 has no customer id")

    mappings = ObservedMappings(
        instance_name="af",
        keys_by_task={
            ("airpeer_proxied", "load"): (dg.AssetKey("loaded"),),
            ("rebuild", "broken_task"): (dg.AssetKey("broken"),),
        },
    )
    def _defs() -> dg.Definitions:
        user = dg.Definitions(assets=[loaded, broken], asset_checks=[loaded_ok])
        return dg.Definitions.merge(user, dg.Definitions(jobs=proxy_jobs(mappings, user)))

    defs = _defs()
    """
)


@pytest.fixture(scope="module")
def dagster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("dagster")
    (tmp / "defs.py").write_text(DEFS)
    with dagster_dev(tmp, tmp / "defs.py", dequeue_interval_seconds=None, timeout=120) as dev:
        yield dev.url


def _proxy(url: str, task: c.ProxyTask) -> c.DagsterRunProxy:
    return c.DagsterRunProxy(
        c.DagsterGraphQLClient(url), task, poll_initial=0.25, poll_max=1.0, deadline_seconds=180
    )


def test_launch_then_a_retry_attaches_to_the_same_run(dagster_url: str) -> None:
    task = c.ProxyTask("af", "airpeer_proxied", "manual__1", "load", 1)
    run_id = _proxy(dagster_url, task).run()
    again = _proxy(dagster_url, c.ProxyTask("af", "airpeer_proxied", "manual__1", "load", 2)).run()
    assert again == run_id
    # Same run id in another DAG run: a new Dagster run.
    other = _proxy(dagster_url, c.ProxyTask("af", "airpeer_proxied", "manual__2", "load", 1)).run()
    assert other != run_id


def test_a_failing_step_fails_with_its_error(dagster_url: str) -> None:
    task = c.ProxyTask("af", "rebuild", "manual__1", "broken_task", 1)
    with pytest.raises(c.DagsterRunFailedError) as err:
        _proxy(dagster_url, task).run()
    assert "step 'broken' failed" in str(err.value)
    assert "row 7 has no customer id" in str(err.value)
    assert f"{dagster_url}/runs/" in str(err.value)


def test_a_task_without_a_job_names_what_is_missing(dagster_url: str) -> None:
    task = c.ProxyTask("af", "rebuild", "manual__1", "not_mapped", 1)
    with pytest.raises(c.DagsterJobNotFoundError, match="proxy_jobs"):
        _proxy(dagster_url, task).run()


EXECUTE = textwrap.dedent(
    """
    import json, sys
    from datetime import datetime, timezone
    from types import SimpleNamespace
    from airflow.models.dagbag import DagBag
    bag = DagBag(sys.argv[1], include_examples=False)
    task = bag.dags["airpeer_proxied"].get_task("load")
    dag_run = SimpleNamespace(dag_id="airpeer_proxied", run_id="scheduled__2024-01-02", logical_date=None)
    context = {"dag_run": dag_run, "ti": SimpleNamespace(try_number=1),
               "logical_date": datetime(2024, 1, 2, tzinfo=timezone.utc)}
    task.execute(context)
    print("RESULT" + json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "dagster")))
    """
)


def test_a_proxied_task_executes_from_airflow_2_without_dagster(dagster_url: str, tmp_path: Path) -> None:
    if not AIRFLOW2_PYTHON.exists():
        pytest.skip(".venvs/airflow2 is not made (make install)")
    home = tmp_path / "airflow_home"
    home.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHON", "VIRTUAL_ENV"))},
        "PYTHONPATH": str(ROOT / "src"),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRPEER_DAGSTER_URL": dagster_url,
        "AIRPEER_AIRFLOW_INSTANCE": "af",
    }
    done = subprocess.run(
        [str(AIRFLOW2_PYTHON), "-c", EXECUTE, str(ROOT / "tests" / "in_airflow" / "dags")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT"))
    assert json.loads(line[len("RESULT") :]) == []
    runs = httpx.post(
        f"{dagster_url}/graphql",
        json={
            "query": "query($t: [ExecutionTag!]) { runsOrError(filter: {tags: $t}) "
            "{ ... on Runs { results { status tags { key value } } } } }",
            "variables": {"t": [{"key": "airpeer/run_id", "value": "scheduled__2024-01-02"}]},
        },
        timeout=10,
    ).json()["data"]["runsOrError"]["results"]
    assert [r["status"] for r in runs] == ["SUCCESS"]
    tags = {t["key"]: t["value"] for t in runs[0]["tags"]}
    assert tags["airpeer/task_id"] == "load" and tags["airpeer/logical_date"] == "2024-01-02T00:00:00+00:00"
