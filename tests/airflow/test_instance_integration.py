"""AirflowInstance against real Airflow 3.3 (af3, REST v2) and 2.11 (af2, REST v1), from tests/conftest.py.

The instances are shared with other tests: every assertion is about DAG runs these tests made themselves.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from dagster_airpeer.airflow import (
    AirflowAuthError,
    AirflowBasicAuthBackend,
    AirflowConnectionError,
    AirflowError,
    AirflowInstance,
    AirflowNotFoundError,
    AirflowVersionError,
    Dag,
    DagRun,
)
from devtools.airflow_stack import AirflowStack, free_port
from devtools.dags import TEST_DAG_IDS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

RUN_TIMEOUT = 240.0


# One client per Airflow for the module: Airflow 2 limits logins through its login form (5 per 40 s per
# client address by default), and each new client logs in once.
@pytest.fixture(scope="module")
def instance(airflow: AirflowStack) -> Iterator[AirflowInstance]:
    with AirflowInstance(
        AirflowBasicAuthBackend(airflow.url, airflow.username, airflow.password), name=f"af{airflow.major}"
    ) as client:
        yield client


@pytest.fixture(scope="module")
def finished_runs(instance: AirflowInstance) -> tuple[DagRun, DagRun]:
    """One successful run of airpeer_ok and one failed run of airpeer_fail, triggered together."""
    ok = instance.trigger_dag_run("airpeer_ok", conf={"from": "airpeer-tests"})
    fail = instance.trigger_dag_run("airpeer_fail")
    ok = instance.wait_for_dag_run("airpeer_ok", ok.run_id, timeout=RUN_TIMEOUT, poll_interval=0.5)
    fail = instance.wait_for_dag_run("airpeer_fail", fail.run_id, timeout=RUN_TIMEOUT, poll_interval=0.5)
    return ok, fail


def test_version_is_detected(airflow: AirflowStack, instance: AirflowInstance) -> None:
    assert instance.api_version == ("v2" if airflow.major == 3 else "v1")
    assert instance.airflow_version.startswith("3.3" if airflow.major == 3 else "2.11")


class _RecordingTransport(httpx.HTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return super().handle_request(request)


def test_api_version_given_skips_detection(airflow: AirflowStack) -> None:
    version = "v2" if airflow.major == 3 else "v1"
    transport = _RecordingTransport()
    backend = AirflowBasicAuthBackend(airflow.url, airflow.username, airflow.password)
    with AirflowInstance(backend, name="given", api_version=version, transport=transport) as client:
        assert client.api_version == version
        assert client.get_dag("airpeer_ok").dag_id == "airpeer_ok"
        assert client.airflow_version.startswith("3.3" if airflow.major == 3 else "2.11")
    assert transport.paths and not [p for p in transport.paths if "health" in p]


def test_a_wrong_api_version_given_fails_loudly(airflow: AirflowStack) -> None:
    wrong = "v1" if airflow.major == 3 else "v2"
    backend = AirflowBasicAuthBackend(airflow.url, airflow.username, airflow.password)
    with AirflowInstance(backend, name="wrong", api_version=wrong) as client, pytest.raises(AirflowError):
        client.get_dag("airpeer_ok")


def test_list_dags_and_filters(instance: AirflowInstance) -> None:
    dags = instance.list_dags()
    ids = [d.dag_id for d in dags]
    assert set(TEST_DAG_IDS) <= set(ids)
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    ok = next(d for d in dags if d.dag_id == "airpeer_ok")
    assert ok.tags == ("airpeer", "test") and ok.owners == ("data-eng",)
    assert ok.description == "airpeer test DAG: one task that succeeds"
    assert ok.is_active and ok.is_paused is False and ok.schedule is None
    assert ok.fileloc and ok.fileloc.endswith("airpeer_ok.py") and ok.file_token

    assert [d.dag_id for d in instance.list_dags(dag_id_pattern="two_tasks")] == ["airpeer_two_tasks"]
    assert set(TEST_DAG_IDS) <= {d.dag_id for d in instance.list_dags(tags=["airpeer"])}
    assert instance.list_dags(tags=["no-such-tag-anywhere"]) == []
    assert {d.dag_id for d in instance.list_dags(include_inactive=True)} >= set(ids)


def test_small_pages_list_the_same_dags(instance: AirflowInstance) -> None:
    everything = [d.dag_id for d in instance.list_dags()]
    seen: list[tuple[int, int]] = []
    instance.page_size = 2
    try:
        dags = instance.list_dags(progress=lambda done, total: seen.append((done, total)))
    finally:
        instance.page_size = 100
    assert [d.dag_id for d in dags] == everything
    assert len(seen) >= 2 and seen[-1][0] == len(dags)


def test_get_dag_tasks_and_not_found(instance: AirflowInstance) -> None:
    dotted = instance.get_dag("airpeer.dotted-id")
    assert dotted.dag_id == "airpeer.dotted-id"
    tasks = {t.task_id: t for t in instance.list_tasks("airpeer_two_tasks")}
    assert set(tasks) == {"extract", "load"}
    assert tasks["extract"].downstream_task_ids == ("load",) and tasks["load"].downstream_task_ids == ()
    assert tasks["extract"].operator == "PythonOperator"
    with pytest.raises(AirflowNotFoundError, match="no_such_dag"):
        instance.get_dag("no_such_dag")
    with pytest.raises(AirflowNotFoundError):
        instance.get_dag_run("airpeer_ok", "no_such_run")


def test_trigger_and_wait(finished_runs: tuple[DagRun, DagRun]) -> None:
    ok, fail = finished_runs
    assert (ok.dag_id, ok.state, ok.conf) == ("airpeer_ok", "success", {"from": "airpeer-tests"})
    assert (fail.dag_id, fail.state) == ("airpeer_fail", "failed")
    for run in (ok, fail):
        assert run.run_id.startswith("airpeer__") and run.run_type == "manual"
        assert run.start_date is not None and run.end_date is not None and run.end_date >= run.start_date
        assert run.end_date.tzinfo is not None


def test_list_finished_runs_finds_both(
    instance: AirflowInstance, finished_runs: tuple[DagRun, DagRun]
) -> None:
    ok, fail = finished_runs
    assert ok.end_date is not None and fail.end_date is not None
    low = min(ok.end_date, fail.end_date)
    high = max(ok.end_date, fail.end_date)
    for order_by in ("end_date", "id"):
        page = instance.list_finished_runs(
            end_date_gte=low, end_date_lte=high, order_by=order_by, dag_ids=["airpeer_ok", "airpeer_fail"]
        )
        mine = {r.run_id: r for r in page.runs if r.run_id in (ok.run_id, fail.run_id)}
        assert mine == {ok.run_id: ok, fail.run_id: fail}, order_by
        assert page.total_entries >= 2 and page.server_time is not None
        # The Date header is Airflow's clock to the second, and uvicorn refreshes it once a second from its
        # event loop, later under load (measured 1.2 s behind a run's end in CI): near, never ahead.
        assert (
            high - timedelta(seconds=30)
            <= page.server_time
            <= datetime.now(timezone.utc) + timedelta(seconds=1)
        )
    ordered = instance.list_finished_runs(end_date_gte=low, end_date_lte=high, order_by="end_date").runs
    ends = [r.end_date for r in ordered if r.end_date is not None]
    assert ends == sorted(ends)
    # The bounds are inclusive and keep microseconds: just past the last end excludes it.
    later = instance.list_finished_runs(
        end_date_gte=high + timedelta(microseconds=1), dag_ids=[ok.dag_id, fail.dag_id]
    )
    assert not {ok.run_id, fail.run_id} & {r.run_id for r in later.runs}
    # One page only, of the size asked.
    one = instance.list_finished_runs(end_date_gte=low - timedelta(days=1), limit=1)
    assert len(one.runs) == 1 and one.total_entries >= 2


def test_task_instances_of_a_run(instance: AirflowInstance, finished_runs: tuple[DagRun, DagRun]) -> None:
    ok, fail = finished_runs
    (ti,) = instance.list_task_instances("airpeer_ok", ok.run_id)
    assert (ti.task_id, ti.run_id, ti.state) == ("succeed", ok.run_id, "success")
    assert [t.state for t in instance.list_task_instances("airpeer_fail", fail.run_id)] == ["failed"]
    states = {r.run_id: r.state for r in instance.list_dag_runs("airpeer_fail", states=["failed"])}
    assert states.get(fail.run_id) == "failed" and set(states.values()) == {"failed"}


def test_pause_trigger_get_delete(instance: AirflowInstance) -> None:
    dag_id = "airpeer_two_tasks"
    try:
        assert instance.set_paused(dag_id, True).is_paused is True
        assert instance.get_dag(dag_id).is_paused is True
        # A paused DAG's run stays queued: safe to delete without racing the scheduler.
        run = instance.trigger_dag_run(dag_id, conf={"n": 1, "s": "é"})
        got = instance.get_dag_run(dag_id, run.run_id)
        assert (got.run_id, got.conf, got.state) == (run.run_id, {"n": 1, "s": "é"}, "queued")
        assert run.run_id in {r.run_id for r in instance.list_dag_runs(dag_id)}
        instance.delete_dag_run(dag_id, run.run_id)
        with pytest.raises(AirflowNotFoundError):
            instance.get_dag_run(dag_id, run.run_id)
    finally:
        assert instance.set_paused(dag_id, False).is_paused is False


def test_dag_sources(instance: AirflowInstance) -> None:
    ok = instance.get_dag("airpeer_ok")
    assert 'dag_id="airpeer_ok"' in instance.get_dag_source(ok)
    # Without a file token (v1 then looks the DAG up first).
    assert 'dag_id="airpeer_ok"' in instance.get_dag_source(Dag(dag_id="airpeer_ok"))
    dags = [d for d in instance.list_dags() if d.dag_id in TEST_DAG_IDS]
    sources = instance.get_dag_sources(dags, max_workers=4)
    assert set(sources) == set(TEST_DAG_IDS)
    assert all(f'dag_id="{d}"' in sources[d] for d in TEST_DAG_IDS if d != "airpeer.dotted-id")


def test_dag_versions(instance: AirflowInstance) -> None:
    if instance.api_version == "v1":
        with pytest.raises(AirflowVersionError, match="no DAG versions"):
            instance.list_dag_versions()
        return
    first = instance.list_dag_versions(limit=2)
    assert len(first.versions) == 2 and first.total_entries >= len(TEST_DAG_IDS)
    rest = instance.list_dag_versions(offset=2, limit=1000)
    versions = first.versions + rest.versions
    assert {v.dag_id for v in versions} >= set(TEST_DAG_IDS)
    ids = [v.id for v in versions]
    assert ids == sorted(ids, reverse=True)  # UUIDv7: newest first


def test_ui_links_answer(instance: AirflowInstance, finished_runs: tuple[DagRun, DagRun]) -> None:
    ok, _ = finished_runs
    for url in (instance.dag_url("airpeer_ok"), instance.run_url("airpeer_ok", ok.run_id)):
        # The UI may send us to its login page first; it must not be a 404.
        response = httpx.get(url, follow_redirects=False, timeout=30)
        assert response.status_code in (200, 302), url


def _reuse_credentials(airflow: AirflowStack) -> AirflowBasicAuthBackend:
    backend = AirflowBasicAuthBackend(airflow.url, airflow.username, airflow.password)
    with AirflowInstance(backend, name="reuse") as client:
        for _ in range(4):
            assert client.get_dag("airpeer_ok").dag_id == "airpeer_ok"
    return backend


def test_credentials_are_reused(airflow: AirflowStack) -> None:
    backend = _reuse_credentials(airflow)
    if airflow.major == 3:
        assert backend.token_requests == 1
        return
    if backend.session_login_skipped and "429" in backend.session_login_skipped:
        # Other clients of this session used up Airflow 2's login rate limit (5 per 40 s): the calls above
        # still worked with basic auth; wait for the window to pass to check the session path too.
        time.sleep(41)
        backend = _reuse_credentials(airflow)
    # Airflow 2: one form login, then the session cookie instead of the password.
    assert backend.session_login_skipped is None
    assert backend.ui_logins == 1 and backend._cookie_honoured


def test_wrong_password_is_a_clear_auth_error(airflow: AirflowStack) -> None:
    with (
        AirflowInstance(
            AirflowBasicAuthBackend(airflow.url, airflow.username, "definitely-wrong-pw"), name="bad"
        ) as client,
        pytest.raises(AirflowAuthError) as info,
    ):
        client.list_dags()
    message = str(info.value)
    assert airflow.url in message and repr(airflow.username) in message
    assert "definitely-wrong-pw" not in message


def test_unreachable_port_fails_quickly() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with AirflowInstance(
        AirflowBasicAuthBackend(url, "admin", "admin"), name="gone", max_retries=1
    ) as client:
        client._http.initial_backoff = client._http.max_backoff = 0.01
        with pytest.raises(AirflowConnectionError) as info:
            client.api_version  # noqa: B018
    assert url in str(info.value) and "2 attempt(s)" in str(info.value)
