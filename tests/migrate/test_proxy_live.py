"""The proxy against a real `dagster dev` (webserver + daemon): launch, attach on retry, a failing step's error.

The code location defines the proxy jobs with `proxy_jobs` from hand-made mappings (no Airflow needed on the
Dagster side). The proxy runs from this venv, then from the Dagster-free Airflow 2.11 venv through a proxied
task's own `execute`, so the operator's context handling meets real Dagster too.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dagster_airpeer.in_airflow import client as c
from devtools.airflow_stack import free_port, listening_sockets, session_pids
from devtools.dagster_dev import DagsterDev, dagster_dev

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW2_PYTHON = ROOT / ".venvs" / "airflow2" / "bin" / "python"
#: The `slow` asset ends once this file exists (one per test session: xdist workers do not share it).
SLOW_DONE = Path(tempfile.gettempdir()) / f"airpeer-slow-done-{os.getpid()}-{uuid.uuid4().hex[:8]}"

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

    @dg.asset
    def slow() -> None:
        import os, time
        # Long enough for the test to stop the webserver while the proxy waits; the test's flag file ends it.
        deadline = time.monotonic() + 120
        while not os.path.exists(os.environ["AIRPEER_TEST_SLOW_DONE"]) and time.monotonic() < deadline:
            time.sleep(0.2)

    mappings = ObservedMappings(
        instance_name="af",
        keys_by_task={
            ("airpeer_proxied", "load"): (dg.AssetKey("loaded"),),
            ("rebuild", "broken_task"): (dg.AssetKey("broken"),),
            ("airpeer_proxied", "slow"): (dg.AssetKey("slow"),),
        },
    )
    def _defs() -> dg.Definitions:
        user = dg.Definitions(assets=[loaded, broken, slow], asset_checks=[loaded_ok])
        return dg.Definitions.merge(user, dg.Definitions(jobs=proxy_jobs(mappings, user)))

    defs = _defs()
    """
)


@pytest.fixture(scope="module")
def live_dagster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterDev]:
    tmp = tmp_path_factory.mktemp("dagster")
    (tmp / "defs.py").write_text(DEFS)
    env = {"AIRPEER_TEST_SLOW_DONE": str(SLOW_DONE)}
    with dagster_dev(tmp, tmp / "defs.py", env, dequeue_interval_seconds=None, timeout=120) as dev:
        yield dev


@pytest.fixture(scope="module")
def dagster_url(live_dagster: DagsterDev) -> str:
    return live_dagster.url


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


def _runs_tagged(url: str, task: c.ProxyTask) -> list[str]:
    tags = [
        {"key": "airpeer/dag_id", "value": task.dag_id},
        {"key": "airpeer/run_id", "value": task.run_id},
        {"key": "airpeer/task_id", "value": task.task_id},
    ]
    query = "query($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}) { ... on Runs { results { runId } } } }"
    answer = httpx.post(f"{url}/graphql", json={"query": query, "variables": {"tags": tags}}, timeout=10)
    return [r["runId"] for r in answer.json()["data"]["runsOrError"]["results"]]


def test_nothing_listening_at_the_url_fails_as_unreachable(dagster_url: str) -> None:
    task = c.ProxyTask("af", "airpeer_proxied", "manual__closed_port", "load", 1)
    closed = f"http://127.0.0.1:{free_port()}"
    client = c.DagsterGraphQLClient(closed, max_retries=2, initial_backoff=0.1, max_backoff=0.2)
    proxy = c.DagsterRunProxy(client, task, poll_initial=0.25, poll_max=1.0, deadline_seconds=30)
    with pytest.raises(c.DagsterUnreachableError, match=rf"Dagster at {closed} did not answer: ConnectError"):
        proxy.run()
    assert _runs_tagged(dagster_url, task) == []  # and the real Dagster was never asked


def test_a_url_that_is_not_the_webservers_root_is_named(dagster_url: str) -> None:
    task = c.ProxyTask("af", "airpeer_proxied", "manual__wrong_path", "load", 1)
    wrong = f"{dagster_url}/runs"  # a page of the UI, not the webserver's base URL
    client = c.DagsterGraphQLClient(wrong, max_retries=1, initial_backoff=0.1, max_backoff=0.2)
    proxy = c.DagsterRunProxy(client, task, poll_initial=0.25, poll_max=1.0, deadline_seconds=30)
    with pytest.raises(c.DagsterRequestError, match=rf"is {wrong} the Dagster webserver"):
        proxy.run()
    assert _runs_tagged(dagster_url, task) == []


def test_a_launch_whose_answer_is_lost_creates_one_run(dagster_url: str) -> None:
    """The real webserver gets the launch and creates the run, but the client stops waiting for the answer
    (a read timeout of 1 ms on that one request, as a loaded machine caused with the 1 s timeout below)."""
    task = c.ProxyTask("af", "airpeer_proxied", "manual__lost_launch", "load", 1)
    client = c.DagsterGraphQLClient(dagster_url)
    post = client._http.post
    lost: list[str] = []

    def impatient(url: str, **kwargs: Any) -> httpx.Response:
        if "AirpeerProxyLaunch(" in kwargs["json"]["query"] and not lost:
            lost.append(url)
            return post(url, timeout=httpx.Timeout(10.0, read=0.001), **kwargs)
        return post(url, **kwargs)

    client._http.post = impatient  # type: ignore[method-assign]
    proxy = c.DagsterRunProxy(
        client, task, poll_initial=0.25, poll_max=1.0, deadline_seconds=180, launch_settle_seconds=5
    )
    run_id = proxy.run()
    assert lost and _runs_tagged(dagster_url, task) == [run_id]


def _webserver_pid(dev: DagsterDev) -> int:
    """The pid of the process of `dagster dev`'s session listening on the webserver's port."""
    port = int(dev.url.rsplit(":", 1)[1])
    pids = [
        pid for pid in session_pids([dev.process.pid]) if any(p == port for _, p in listening_sockets([pid]))
    ]
    assert len(pids) == 1, pids
    return pids[0]


def test_the_webserver_stopped_while_the_task_waits_then_back(
    live_dagster: DagsterDev, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGSTOP freezes the real webserver (requests time out) while the daemon and the run go on."""
    dagster_url = live_dagster.url
    caplog.set_level(logging.WARNING)
    SLOW_DONE.unlink(missing_ok=True)
    task = c.ProxyTask("af", "airpeer_proxied", "manual__frozen_webserver", "slow", 1)
    client = c.DagsterGraphQLClient(
        dagster_url, timeout=1.0, max_retries=1, initial_backoff=0.1, max_backoff=0.5
    )
    proxy = c.DagsterRunProxy(client, task, poll_initial=0.25, poll_max=0.5, deadline_seconds=120)
    result: dict[str, object] = {}
    waiting = threading.Thread(target=lambda: result.update(run_id=proxy.run()), daemon=True)
    waiting.start()
    deadline = time.monotonic() + 60
    # Frozen once the proxy follows its run (a launch whose answer was lost under load is settled first).
    while proxy.run_id is None:
        assert time.monotonic() < deadline and waiting.is_alive(), ("the proxy launched no run", result)
        time.sleep(0.25)
    webserver = _webserver_pid(live_dagster)
    os.kill(webserver, signal.SIGSTOP)
    try:
        frozen_until = time.monotonic() + 6  # several of the proxy's polls time out meanwhile
        while time.monotonic() < frozen_until:
            assert waiting.is_alive(), result
            time.sleep(0.25)
        SLOW_DONE.touch()  # the run ends while the webserver cannot tell anyone
    finally:
        os.kill(webserver, signal.SIGCONT)
    waiting.join(timeout=90)
    assert not waiting.is_alive(), "the proxy did not finish after the webserver came back"
    try:
        assert result["run_id"] == _runs_tagged(dagster_url, task)[0]
        assert len(_runs_tagged(dagster_url, task)) == 1
        frozen = [r.getMessage() for r in caplog.records if "did not answer while waiting" in r.getMessage()]
        assert frozen and all("ReadTimeout" in m for m in frozen), frozen
    finally:
        SLOW_DONE.unlink(missing_ok=True)


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
