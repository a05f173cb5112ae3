"""AirflowInstance against a scripted Airflow: version detection, retries, deadlines, paging, parsing,
errors, URL quoting. (Behaviour against a real Airflow: test_instance_integration.py.)"""

from __future__ import annotations

import json
import logging
from collections.abc import Generator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from airflow_fakes import (
    LOCAL_URL,
    URL,
    AuthProxy,
    FakeAirflow,
    basic_auth_of,
    bearer_of,
    dag_v1,
    dag_v2,
    json_response,
    make_instance,
    run_v1,
    run_v2,
)

from dagster_airpeer.airflow import (
    AirflowAuthBackend,
    AirflowAuthError,
    AirflowBasicAuthBackend,
    AirflowConfigError,
    AirflowConnectionError,
    AirflowError,
    AirflowInstance,
    AirflowNotFoundError,
    AirflowResponseError,
    AirflowTimeoutError,
    AirflowTokenAuthBackend,
    AirflowVersionError,
    Dag,
)

UTC = timezone.utc


# -- construction ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "my-airflow", "a b", "ünï", None])
def test_name_must_be_a_dagster_name(name: Any) -> None:
    with pytest.raises(AirflowConfigError, match="`name`"):
        AirflowInstance(AirflowTokenAuthBackend(URL, "t"), name=name)


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [({"timeout": 0}, "timeout"), ({"max_retries": -1}, "max_retries"), ({"page_size": 0}, "page_size")],
)
def test_numeric_settings_are_validated(kwargs: dict[str, Any], setting: str) -> None:
    with pytest.raises(AirflowConfigError, match=setting):
        AirflowInstance(AirflowTokenAuthBackend(URL, "t"), name="x", **kwargs)


def test_plain_http_to_remote_host_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeAirflow("v2")
    with caplog.at_level(logging.WARNING, logger="dagster_airpeer.airflow"):
        instance = make_instance(fake)
        instance.api_version  # noqa: B018
        instance.server_time()
        local = make_instance(fake, url=LOCAL_URL)
        local.api_version  # noqa: B018
    warnings = [r for r in caplog.records if "plain http" in r.getMessage()]
    assert len(warnings) == 1 and URL in warnings[0].getMessage()


# -- version detection ----------------------------------------------------------------------------------------


def test_detects_v2() -> None:
    fake = FakeAirflow("v2")
    instance = make_instance(fake)
    assert instance.api_version == "v2"
    assert instance.api_version == "v2"
    assert [r.url.path for r in fake.requests] == ["/api/v2/monitor/health"]


def test_detects_v1() -> None:
    fake = FakeAirflow("v1")
    instance = make_instance(fake)
    assert instance.api_version == "v1"
    assert [r.url.path for r in fake.requests] == ["/api/v2/monitor/health", "/api/v1/health"]


@pytest.mark.parametrize(
    "answer",
    [
        lambda r: httpx.Response(404, text="nothing here"),
        lambda r: httpx.Response(200, text="<html>a single-page app answers everything</html>"),
    ],
)
def test_neither_version_is_an_error_naming_the_url(answer: Any) -> None:
    fake = FakeAirflow("none")
    fake.add("GET", "/api/v2/monitor/health", answer)
    fake.add("GET", "/api/v1/health", answer)
    instance = make_instance(fake)
    with pytest.raises(AirflowVersionError) as info:
        instance.api_version  # noqa: B018
    assert URL in str(info.value) and "/api/v1/health" in str(info.value)


def test_airflow_version_is_asked_once() -> None:
    fake = FakeAirflow("v2")
    fake.add(
        "GET", "/api/v2/version", lambda r: json_response(200, {"version": "3.3.2", "git_version": None})
    )
    instance = make_instance(fake)
    assert instance.airflow_version == "3.3.2"
    assert instance.airflow_version == "3.3.2"
    assert len(fake.api("GET", "/version")) == 1


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_api_version_given_skips_detection(version: str) -> None:
    fake = FakeAirflow(version)
    dag = dag_v2("a") if version == "v2" else dag_v1("a")
    fake.add("GET", f"/api/{version}/dags/a", lambda r: json_response(200, dag))
    instance = make_instance(fake, api_version=version)
    assert instance.api_version == version
    assert instance.get_dag("a").dag_id == "a"
    assert not [r for r in fake.requests if "health" in r.url.path]


@pytest.mark.parametrize("value", ["v3", "V2", "2", "", 2, ["v2"]])
def test_api_version_is_validated_naming_the_setting(value: Any) -> None:
    with pytest.raises(AirflowConfigError, match=r"`api_version` must be 'v2' \(Airflow 3\), 'v1'"):
        AirflowInstance(AirflowTokenAuthBackend(URL, "t"), name="x", api_version=value)


@pytest.mark.parametrize("status", [401, 403])
def test_airflow3_behind_an_auth_proxy_is_detected_with_credentials(status: int) -> None:
    fake = FakeAirflow("v2")
    fake.valid_tokens.add("proxy-and-airflow-token")
    fake.add("GET", "/api/v2/dags/a", lambda r: json_response(200, dag_v2("a")))
    proxy = AuthProxy(fake, bearer_of("proxy-and-airflow-token"), status=status)
    instance = AirflowInstance(
        AirflowTokenAuthBackend(URL, "proxy-and-airflow-token"), name="x", transport=proxy.transport()
    )
    assert instance.api_version == "v2"
    assert instance.get_dag("a").dag_id == "a"
    # Asked without credentials first (Airflow itself serves health to anyone), then with them.
    assert [r.url.path for r in fake.requests] == ["/api/v2/monitor/health", "/api/v2/dags/a"]
    assert proxy.refused == ["/api/v2/monitor/health"]


def test_airflow2_behind_a_basic_auth_proxy_is_detected_with_credentials() -> None:
    fake = FakeAirflow("v1")
    fake.add("GET", "/api/v1/dags/a", lambda r: json_response(200, dag_v1("a")))
    proxy = AuthProxy(fake, basic_auth_of(fake.username, fake.password))
    instance = AirflowInstance(
        AirflowBasicAuthBackend(URL, fake.username, fake.password), name="x", transport=proxy.transport()
    )
    assert instance.api_version == "v1"
    assert instance.get_dag("a").dag_id == "a"


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_during_detection_are_an_auth_error_not_unreachable(status: int) -> None:
    fake = FakeAirflow("v1")
    proxy = AuthProxy(fake, basic_auth_of(fake.username, fake.password), status=status)
    instance = AirflowInstance(
        AirflowBasicAuthBackend(URL, fake.username, "wrong-pw-123"), name="x", transport=proxy.transport()
    )
    with pytest.raises(AirflowAuthError) as info:
        instance.api_version  # noqa: B018
    message = str(info.value)
    assert URL in message and "user 'admin'" in message and "`api_version=`" in message
    assert "/api/v2/monitor/health" in message and "/api/v1/health" in message
    assert f"HTTP {status}" in message and "wrong-pw-123" not in message
    assert instance._api_version is None  # nothing guessed: the next call detects again


class _HeaderBackend(AirflowAuthBackend):
    """A custom backend that adds a header and leaves every answer, refusals included, to the instance."""

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["X-Api-Key"] = "k3y"
        yield request


@pytest.mark.parametrize(
    ("backend", "v2_gave"),
    [
        (AirflowTokenAuthBackend(URL, "t"), "HTTP 401, and with credentials a refusal (Airflow at"),
        (_HeaderBackend(URL), "HTTP 401 without and with credentials"),
    ],
    ids=["backend-raises", "backend-passes-through"],
)
def test_a_refusal_on_one_health_endpoint_and_404_on_the_other_is_an_auth_error(
    backend: AirflowAuthBackend, v2_gave: str
) -> None:
    fake = FakeAirflow("none")
    fake.add("GET", "/api/v2/monitor/health", lambda r: json_response(401, {"detail": "Not authenticated"}))
    fake.add("GET", "/api/v1/health", lambda r: httpx.Response(404, text="Not Found"))
    instance = AirflowInstance(backend, name="x", transport=fake.transport())
    with pytest.raises(AirflowAuthError) as info:
        instance.api_version  # noqa: B018
    message = str(info.value)
    assert f"GET /api/v2/monitor/health gave {v2_gave}" in message
    assert "GET /api/v1/health gave HTTP 404." in message
    assert [r.headers.get("authorization") or r.headers.get("x-api-key") for r in fake.requests] == [
        None, "Bearer t" if isinstance(backend, AirflowTokenAuthBackend) else "k3y", None
    ]  # fmt: skip


def test_a_detected_version_is_kept_through_an_outage() -> None:
    fake = FakeAirflow("v1")
    down = {"now": False}

    def maybe_down(request: httpx.Request) -> httpx.Response:
        if down["now"]:
            raise httpx.ConnectError("[Errno 111] Connection refused")
        return fake(request)

    instance = AirflowInstance(
        AirflowBasicAuthBackend(URL, fake.username, fake.password),
        name="x",
        max_retries=1,
        transport=httpx.MockTransport(maybe_down),
    )
    instance._http.sleep = lambda s: None
    assert instance.api_version == "v1"
    down["now"] = True
    with pytest.raises(AirflowConnectionError) as info:
        instance.list_finished_runs(end_date_gte=datetime(2025, 11, 25, tzinfo=UTC))
    message = str(info.value)
    assert f"POST {URL}/api/v1/dags/~/dagRuns/list" in message and "/api/v2" not in message
    assert instance.api_version == "v1"


def test_an_unreachable_airflow_during_detection_says_it_was_the_version_check() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    instance = AirflowInstance(
        AirflowTokenAuthBackend(URL, "t"), name="x", max_retries=0, transport=httpx.MockTransport(refuse)
    )
    with pytest.raises(AirflowConnectionError) as info:
        instance.api_version  # noqa: B018
    message = str(info.value)
    assert f"GET {URL}/api/v2/monitor/health" in message
    assert "detection of the Airflow version" in message and "`api_version=`" in message


def test_use_api_version_sets_only_an_unknown_version() -> None:
    fake = FakeAirflow("v2")
    instance = make_instance(fake)
    instance.use_api_version("v1")
    assert instance.api_version == "v1" and not fake.requests
    instance.use_api_version("v2")
    assert instance.api_version == "v1"
    with pytest.raises(AirflowConfigError, match="`version`"):
        instance.use_api_version("v9")


# -- retries ----------------------------------------------------------------------------------------------------


def _flaky(answers: list[Any], final: httpx.Response) -> Any:
    """A handler that raises/returns the given answers in order, then `final` forever."""
    state = {"i": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        i = state["i"]
        state["i"] += 1
        if i < len(answers):
            answer = answers[i]
            if isinstance(answer, Exception):
                raise answer
            return answer  # type: ignore[no-any-return]
        return final

    return handler


@pytest.mark.parametrize(
    "failure",
    [
        json_response(503, {"detail": "Service Unavailable"}),
        json_response(500, {"detail": "boom"}),
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("timed out"),
        httpx.RemoteProtocolError("peer closed connection without sending complete message body"),
        httpx.Response(200, content=b'{"dag_id": "a", "dag_display_name": "a", "is_pa'),
    ],
    ids=["503", "500", "connect", "read-timeout", "protocol", "cut-json"],
)
def test_transient_failures_are_retried(failure: Any) -> None:
    fake = FakeAirflow("v2")
    fake.add("GET", "/api/v2/dags/a", _flaky([failure, failure], json_response(200, dag_v2("a"))))
    instance = make_instance(fake)
    assert instance.get_dag("a").dag_id == "a"
    assert len(fake.api("GET", "/dags/a")) == 3
    assert len(instance.sleeps) == 2  # type: ignore[attr-defined]


def test_429_honours_retry_after_capped() -> None:
    fake = FakeAirflow("v2")
    answers = [
        json_response(429, {"detail": "slow down"}, {"Retry-After": "7"}),
        json_response(429, {"detail": "slow down"}, {"Retry-After": "3600"}),
    ]
    fake.add("GET", "/api/v2/dags/a", _flaky(answers, json_response(200, dag_v2("a"))))
    instance = make_instance(fake)
    instance.get_dag("a")
    assert instance.sleeps == [7.0, 30.0]  # type: ignore[attr-defined]


def test_backoff_grows_and_gives_up_with_a_clear_error() -> None:
    fake = FakeAirflow("v2")
    instance = make_instance(fake, max_retries=4)
    instance.api_version  # noqa: B018
    fake.add("GET", "/api/v2/dags/a", _flaky([], json_response(503, {"detail": "database is locked"})))
    with pytest.raises(AirflowConnectionError) as info:
        instance.get_dag("a")
    message = str(info.value)
    assert "'test_airflow'" in message and f"{URL}/api/v2/dags/a" in message
    assert "5 attempt(s)" in message and "503" in message and "database is locked" in message
    sleeps = instance.sleeps  # type: ignore[attr-defined]
    assert len(sleeps) == 4 and sleeps[-1] > sleeps[0]


def test_connection_refused_after_retries() -> None:
    fake = FakeAirflow("v2")

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    instance = AirflowInstance(
        AirflowTokenAuthBackend(URL, "t"), name="x", max_retries=2, transport=httpx.MockTransport(refuse)
    )
    instance._http.sleep = lambda s: None
    with pytest.raises(AirflowConnectionError, match=r"connection failed.*3 attempt\(s\)"):
        instance.api_version  # noqa: B018
    del fake


@pytest.mark.parametrize("status", [400, 409, 422])
def test_other_4xx_are_not_retried_and_carry_airflow_detail(status: int) -> None:
    fake = FakeAirflow("v2")
    detail: Any = (
        "Bad thing" if status != 422 else [{"loc": ["body", "page_limit"], "msg": "bad", "type": "x"}]
    )
    fake.add("GET", "/api/v2/dags/a", lambda r: json_response(status, {"detail": detail}))
    instance = make_instance(fake)
    with pytest.raises(AirflowError) as info:
        instance.get_dag("a")
    assert f"HTTP {status}" in str(info.value)
    assert ("body.page_limit: bad" if status == 422 else "Bad thing") in str(info.value)
    assert len(fake.api("GET", "/dags/a")) == 1


def test_404_is_not_found_naming_dag_and_instance() -> None:
    fake = FakeAirflow("v2")
    fake.add(
        "GET", "/api/v2/dags/nope", lambda r: json_response(404, {"detail": "Dag with id nope was not found"})
    )
    instance = make_instance(fake)
    with pytest.raises(AirflowNotFoundError) as info:
        instance.get_dag("nope")
    assert "DAG 'nope'" in str(info.value) and "'test_airflow'" in str(info.value)


# -- deadline ---------------------------------------------------------------------------------------------------


def test_nothing_starts_after_the_deadline() -> None:
    fake = FakeAirflow("v2")
    fake.add("GET", "/api/v2/dags/a", lambda r: json_response(200, dag_v2("a")))
    instance = make_instance(fake)
    instance.api_version  # noqa: B018
    seen = len(fake.requests)
    with instance.deadline(0), pytest.raises(AirflowConnectionError, match="time budget"):
        instance.get_dag("a")
    assert len(fake.requests) == seen


def test_no_retry_is_scheduled_past_the_deadline() -> None:
    fake = FakeAirflow("v2")
    fake.add("GET", "/api/v2/dags/a", lambda r: json_response(503, {"detail": "busy"}))
    instance = make_instance(fake)
    instance.api_version  # noqa: B018
    instance._http.initial_backoff = instance._http.max_backoff = 600.0  # overshoots the budget below
    with instance.deadline(60), pytest.raises(AirflowConnectionError, match="time budget"):
        instance.get_dag("a")
    assert len(fake.api("GET", "/dags/a")) == 1
    assert instance.sleeps == []  # type: ignore[attr-defined]


def test_timeouts_are_clipped_to_the_time_left() -> None:
    fake = FakeAirflow("v2")
    fake.add("GET", "/api/v2/dags/a", lambda r: json_response(200, dag_v2("a")))
    instance = make_instance(fake, timeout=30.0)
    instance.get_dag("a")
    with instance.deadline(2.0):
        instance.get_dag("a")
    free, clipped = fake.api("GET", "/dags/a")
    assert free.extensions["timeout"]["read"] == 30.0 and free.extensions["timeout"]["connect"] == 5.0
    assert clipped.extensions["timeout"]["read"] <= 2.0 and clipped.extensions["timeout"]["connect"] <= 2.0


# -- list_dags paging ----------------------------------------------------------------------------------------------


class _ShiftingDags:
    """GET /dags over a list that the test changes between pages (offset paging, ordered by dag_id)."""

    def __init__(self, fake: FakeAirflow, ids: list[str], cap: int | None = None) -> None:
        self.ids = sorted(ids)
        self.cap = cap
        self.pages = 0
        self.between_pages: dict[int, Any] = {}
        self.params: list[httpx.QueryParams] = []
        fake.add("GET", f"/api/{fake.version}/dags", self)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        change = self.between_pages.get(self.pages)
        if change is not None:
            change(self.ids)
            self.ids.sort()
        self.pages += 1
        self.params.append(request.url.params)
        offset = int(request.url.params["offset"])
        limit = int(request.url.params["limit"])
        if self.cap is not None:
            limit = min(limit, self.cap)
        page = self.ids[offset : offset + limit]
        return json_response(200, {"dags": [dag_v2(i) for i in page], "total_entries": len(self.ids)})


def _ids(n: int) -> list[str]:
    return [f"dag_{i:03d}" for i in range(n)]


def test_list_dags_pages_through_everything() -> None:
    fake = FakeAirflow("v2")
    listing = _ShiftingDags(fake, _ids(25))
    instance = make_instance(fake, page_size=10)
    progress: list[tuple[int, int]] = []
    dags = instance.list_dags(progress=lambda done, total: progress.append((done, total)))
    assert [d.dag_id for d in dags] == _ids(25)
    assert progress[-1] == (25, 25)
    assert listing.params[0]["order_by"] == "dag_id" and listing.params[0]["exclude_stale"] == "true"


def test_list_dags_neither_misses_nor_repeats_when_listing_shifts() -> None:
    fake = FakeAirflow("v2")
    listing = _ShiftingDags(fake, _ids(30))
    # After page 1: two DAGs before our position disappear (the listing slides left) ...
    listing.between_pages[1] = lambda ids: [ids.remove(x) for x in ("dag_002", "dag_003")]
    # ... after page 2: new DAGs appear before our position (the listing slides right).
    listing.between_pages[2] = lambda ids: ids.extend(["dag_000a", "dag_000b", "dag_000c"])
    instance = make_instance(fake, page_size=10)
    got = [d.dag_id for d in instance.list_dags()]
    assert len(got) == len(set(got))
    # Every DAG listed throughout is there.
    assert set(_ids(30)) - {"dag_002", "dag_003"} <= set(got)


def test_list_dags_copes_with_a_server_capping_the_page_size() -> None:
    fake = FakeAirflow("v2")
    _ShiftingDags(fake, _ids(23), cap=5)
    instance = make_instance(fake, page_size=100)
    assert [d.dag_id for d in instance.list_dags()] == _ids(23)


def test_list_dags_filters_are_sent_to_airflow() -> None:
    fake = FakeAirflow("v1")
    seen: list[httpx.QueryParams] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.params)
        return json_response(200, {"dags": [dag_v1("etl_a")], "total_entries": 1})

    fake.add("GET", "/api/v1/dags", handler)
    instance = make_instance(fake)
    instance.list_dags(dag_id_pattern="etl", tags=["team-a", "team b"], include_inactive=True)
    params = seen[0]
    assert params["dag_id_pattern"] == "etl"
    assert params.get_list("tags") == ["team-a", "team b"]
    assert params["only_active"] == "false"


# -- parsing ----------------------------------------------------------------------------------------------------


def test_v2_dag_shape() -> None:
    fake = FakeAirflow("v2")
    fake.add(
        "GET",
        "/api/v2/dags/a",
        lambda r: json_response(
            200, dag_v2("a", timetable_summary="0 0 * * *", is_stale=True, description="d")
        ),
    )
    dag = make_instance(fake).get_dag("a")
    assert dag == Dag(
        dag_id="a",
        display_name="a",
        description="d",
        tags=("airpeer", "example"),
        owners=("airflow",),
        schedule="0 0 * * *",
        timetable_description="Never, external triggers only",
        fileloc="/opt/airflow/dags/a.py",
        file_token=".eJw1yTEKgCAUANC7_NnBSRePpb9",
        is_paused=False,
        is_active=False,
        last_parsed_time=datetime(2025, 11, 25, 9, 58, 1, 123456, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("schedule_interval", "expected"),
    [
        ({"__type": "CronExpression", "value": "0 0 * * *"}, "0 0 * * *"),
        ({"__type": "CronExpression", "value": "@daily"}, "@daily"),
        ({"__type": "TimeDelta", "days": 1, "seconds": 3600, "microseconds": 0}, "1 day, 1:00:00"),
        ({"__type": "RelativeDelta", "months": 1, "days": 0}, "relativedelta(months=1)"),
        (None, None),
    ],
)
def test_v1_dag_shape(schedule_interval: Any, expected: str | None) -> None:
    fake = FakeAirflow("v1")
    fake.add(
        "GET",
        "/api/v1/dags/a",
        lambda r: json_response(200, dag_v1("a", schedule_interval=schedule_interval)),
    )
    dag = make_instance(fake).get_dag("a")
    assert dag.schedule == expected
    assert dag.tags == ("example",) and dag.is_active is True and dag.owners == ("airflow",)
    assert dag.last_parsed_time == datetime(2025, 11, 25, 9, 58, 1, 123456, tzinfo=UTC)


def test_runs_of_both_shapes() -> None:
    for version, make_run in (("v2", run_v2), ("v1", run_v1)):
        fake = FakeAirflow(version)
        fake.add(
            "GET",
            f"/api/{version}/dags/a/dagRuns/r1",
            lambda r, make_run=make_run: json_response(200, make_run("a", "r1", conf=None)),
        )
        run = make_instance(fake).get_dag_run("a", "r1")
        assert (run.dag_id, run.run_id, run.state, run.conf) == ("a", "r1", "success", {})
        assert run.end_date == datetime(2025, 11, 25, 10, 0, 5, 345678, tzinfo=UTC)
        assert run.succeeded and run.is_finished
        if version == "v2":
            assert run.logical_date is None and run.triggered_by == "rest_api"
            assert run.queued_at == datetime(2025, 11, 25, 10, 0, 0, 100000, tzinfo=UTC)
        else:
            assert run.logical_date == datetime(2025, 11, 25, 10, 0, tzinfo=UTC)
            assert run.triggered_by == "external"


def test_unknown_run_state_is_kept() -> None:
    fake = FakeAirflow("v2")
    fake.add(
        "GET", "/api/v2/dags/a/dagRuns/r1", lambda r: json_response(200, run_v2("a", "r1", "paused_forever"))
    )
    run = make_instance(fake).get_dag_run("a", "r1")
    assert run.state == "paused_forever" and not run.is_finished


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"dags": [{"dag_display_name": "a"}], "total_entries": 1}, "dags[0].dag_id"),
        ({"dags": [dag_v2("a", is_paused="maybe")], "total_entries": 1}, "dags[0].is_paused"),
        ({"dags": "nope", "total_entries": 1}, "dags"),
        ({"dags": []}, "total_entries"),
    ],
)
def test_malformed_answers_name_endpoint_and_field(body: Any, field: str) -> None:
    fake = FakeAirflow("v2")
    fake.add("GET", "/api/v2/dags", lambda r: json_response(200, body))
    instance = make_instance(fake)
    with pytest.raises(AirflowResponseError) as info:
        instance.list_dags()
    assert "GET /api/v2/dags" in str(info.value) and f"`{field}`" in str(info.value)
    assert len(fake.api("GET", "/dags")) == 1  # a wrong shape is not retried


def test_body_that_stays_non_json_is_a_response_error() -> None:
    fake = FakeAirflow("v2")
    fake.add("GET", "/api/v2/dags/a", lambda r: httpx.Response(200, text="<html>proxy error</html>"))
    instance = make_instance(fake, max_retries=1)
    with pytest.raises(AirflowResponseError, match="not valid JSON"):
        instance.get_dag("a")
    assert len(fake.api("GET", "/dags/a")) == 2


def test_tasks_and_task_instances() -> None:
    fake = FakeAirflow("v2")
    fake.add(
        "GET",
        "/api/v2/dags/a/tasks",
        lambda r: json_response(
            200,
            {
                "tasks": [
                    {"task_id": "t1", "operator_name": "BashOperator", "downstream_task_ids": ["t2"]},
                    {"task_id": "t2", "operator_name": None, "class_ref": {"class_name": "PythonOperator"}},
                ],
                "total_entries": 2,
            },
        ),
    )
    tis = [
        {
            "task_id": "t1",
            "dag_id": "a",
            "dag_run_id": "r1",
            "map_index": -1,
            "state": "success",
            "try_number": 1,
            "start_date": "2025-11-25T10:00:01Z",
            "end_date": "2025-11-25T10:00:02Z",
            "id": "0193",
        },
        {
            "task_id": "t2",
            "dag_id": "a",
            "dag_run_id": "r1",
            "map_index": -1,
            "state": None,
            "try_number": 0,
            "start_date": None,
            "end_date": None,
            "id": "0194",
        },
    ]
    fake.add(
        "GET",
        "/api/v2/dags/a/dagRuns/r1/taskInstances",
        lambda r: json_response(200, {"task_instances": tis, "total_entries": 2}),
    )
    instance = make_instance(fake)
    tasks = instance.list_tasks("a")
    assert [(t.task_id, t.operator, t.downstream_task_ids) for t in tasks] == [
        ("t1", "BashOperator", ("t2",)),
        ("t2", "PythonOperator", ()),
    ]
    got = instance.list_task_instances("a", "r1")
    assert [(t.task_id, t.run_id, t.state, t.try_number) for t in got] == [
        ("t1", "r1", "success", 1),
        ("t2", "r1", None, 0),
    ]


# -- URL quoting and links ---------------------------------------------------------------------------------------


def test_ids_are_url_quoted() -> None:
    fake = FakeAirflow("v2")
    odd = "team/a b.é"
    fake.add(
        "GET",
        f"/api/v2/dags/{odd}/dagRuns/manual__2025+00:00 x",
        lambda r: json_response(200, run_v2(odd, "r")),
    )
    instance = make_instance(fake)
    instance.get_dag_run(odd, "manual__2025+00:00 x")
    raw = fake.requests[-1].url.raw_path.decode()
    assert raw == "/api/v2/dags/team%2Fa%20b.%C3%A9/dagRuns/manual__2025%2B00%3A00%20x"


def test_ui_links_per_version() -> None:
    v2 = make_instance(FakeAirflow("v2"))
    assert v2.dag_url("a b") == f"{URL}/dags/a%20b"
    assert v2.run_url("a", "manual__x+y") == f"{URL}/dags/a/runs/manual__x%2By"
    v1 = make_instance(FakeAirflow("v1"))
    assert v1.dag_url("a") == f"{URL}/dags/a/grid"
    assert v1.run_url("a", "r 1") == f"{URL}/dags/a/grid?dag_run_id=r%201"


# -- runs -----------------------------------------------------------------------------------------------------


def test_trigger_v2_sends_logical_date_null_and_a_client_run_id() -> None:
    fake = FakeAirflow("v2")
    bodies: list[dict[str, Any]] = []

    def trigger(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        return json_response(200, run_v2("a", body["dag_run_id"], "queued", conf=body["conf"]))

    fake.add("POST", "/api/v2/dags/a/dagRuns", trigger)
    run = make_instance(fake).trigger_dag_run("a", conf={"k": 1})
    assert bodies[0]["logical_date"] is None and bodies[0]["conf"] == {"k": 1}
    assert bodies[0]["dag_run_id"].startswith("airpeer__") and run.run_id == bodies[0]["dag_run_id"]
    assert run.state == "queued" and run.conf == {"k": 1}


def test_trigger_v1_body() -> None:
    fake = FakeAirflow("v1")
    bodies: list[dict[str, Any]] = []

    def trigger(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return json_response(200, run_v1("a", "mine", "queued"))

    fake.add("POST", "/api/v1/dags/a/dagRuns", trigger)
    instance = make_instance(fake)
    instance.trigger_dag_run("a", run_id="mine")
    instance.trigger_dag_run("a", run_id="mine2", logical_date=datetime(2025, 1, 1, tzinfo=UTC))
    assert bodies[0] == {"dag_run_id": "mine", "conf": {}}
    assert bodies[1]["logical_date"] == "2025-01-01T00:00:00.000000+00:00"
    with pytest.raises(AirflowConfigError, match="timezone-aware"):
        instance.trigger_dag_run("a", logical_date=datetime(2025, 1, 1))


def test_retried_trigger_returns_the_run_created_by_the_lost_attempt() -> None:
    fake = FakeAirflow("v2")
    created: dict[str, Any] = {}

    def trigger(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body["dag_run_id"] in created:
            return json_response(409, {"detail": "already exists"})
        created[body["dag_run_id"]] = run_v2("a", body["dag_run_id"], "queued")
        raise httpx.ReadTimeout("answer lost")

    fake.add("POST", "/api/v2/dags/a/dagRuns", trigger)
    instance = make_instance(fake)
    run_id = "airpeer__fixed"
    fake.add("GET", f"/api/v2/dags/a/dagRuns/{run_id}", lambda r: json_response(200, created[run_id]))
    run = instance.trigger_dag_run("a", run_id=run_id)
    assert run.run_id == run_id and len(created) == 1


def test_trigger_conflict_on_first_attempt_is_an_error() -> None:
    fake = FakeAirflow("v2")
    fake.add("POST", "/api/v2/dags/a/dagRuns", lambda r: json_response(409, {"detail": "exists"}))
    with pytest.raises(AirflowError, match="already has a run"):
        make_instance(fake).trigger_dag_run("a", run_id="dup")


def test_wait_for_dag_run_polls_until_finished_or_times_out() -> None:
    fake = FakeAirflow("v2")
    states = iter(["queued", "running", "running", "failed"])
    fake.add("GET", "/api/v2/dags/a/dagRuns/r", lambda r: json_response(200, run_v2("a", "r", next(states))))
    instance = make_instance(fake)
    assert instance.wait_for_dag_run("a", "r", poll_interval=0.01).state == "failed"

    fake.add("GET", "/api/v2/dags/a/dagRuns/r", lambda r: json_response(200, run_v2("a", "r", "running")))
    with pytest.raises(AirflowTimeoutError, match="did not finish"):
        instance.wait_for_dag_run("a", "r", timeout=0)


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_list_finished_runs_body_and_page(version: str) -> None:
    make_run = run_v2 if version == "v2" else run_v1
    fake = FakeAirflow(version)
    bodies: list[dict[str, Any]] = []

    def listing(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        runs = [make_run("a", "r1"), make_run("b", "r2", "failed")]
        return json_response(200, {"dag_runs": runs, "total_entries": 7})

    fake.add("POST", f"/api/{version}/dags/~/dagRuns/list", listing)
    instance = make_instance(fake, page_size=50)
    assert instance.server_time() is None
    page = instance.list_finished_runs(
        end_date_gte=datetime(2025, 11, 25, 9, 0, 0, 1, tzinfo=UTC),
        end_date_lte=datetime(2025, 11, 25, 11, 0, tzinfo=timezone(timedelta(hours=1))),
        order_by="id",
        offset=10,
        dag_ids=["a", "b"],
    )
    assert bodies[0] == {
        "states": ["success", "failed"],
        "end_date_gte": "2025-11-25T09:00:00.000001+00:00",
        "end_date_lte": "2025-11-25T10:00:00.000000+00:00",
        "order_by": "id",
        "page_offset": 10,
        "page_limit": 50,
        "dag_ids": ["a", "b"],
    }
    assert [(r.dag_id, r.run_id, r.state) for r in page.runs] == [
        ("a", "r1", "success"),
        ("b", "r2", "failed"),
    ]
    assert page.total_entries == 7
    assert page.server_time == datetime(2025, 11, 25, 10, 0, 0, tzinfo=UTC)
    now = instance.server_time()
    assert now is not None and now >= page.server_time


def test_list_finished_runs_rejects_naive_dates_and_skips_empty_dag_ids() -> None:
    fake = FakeAirflow("v2")
    instance = make_instance(fake)
    with pytest.raises(AirflowConfigError, match="end_date_gte"):
        instance.list_finished_runs(end_date_gte=datetime(2025, 1, 1))
    seen = len(fake.requests)
    page = instance.list_finished_runs(end_date_gte=datetime(2025, 1, 1, tzinfo=UTC), dag_ids=[])
    assert page.runs == () and page.total_entries == 0 and len(fake.requests) == seen


def test_list_dag_runs_pages_and_filters() -> None:
    fake = FakeAirflow("v2")
    runs = [run_v2("a", f"r{i:02d}") for i in range(7)]
    seen: list[httpx.QueryParams] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.params)
        offset, limit = int(request.url.params["offset"]), int(request.url.params["limit"])
        return json_response(200, {"dag_runs": runs[offset : offset + limit], "total_entries": len(runs)})

    fake.add("GET", "/api/v2/dags/~/dagRuns", handler)
    got = make_instance(fake, page_size=3).list_dag_runs(states=["success", "failed"])
    assert [r.run_id for r in got] == [f"r{i:02d}" for i in range(7)]
    assert seen[0].get_list("state") == ["success", "failed"] and seen[0]["order_by"] == "id"


def test_delete_and_pause() -> None:
    fake = FakeAirflow("v1")
    bodies: list[tuple[httpx.QueryParams, Any]] = []

    def patch(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append((request.url.params, body))
        return json_response(200, dag_v1("a", is_paused=body["is_paused"]))

    fake.add("PATCH", "/api/v1/dags/a", patch)
    fake.add("DELETE", "/api/v1/dags/a/dagRuns/r", lambda r: httpx.Response(204))
    instance = make_instance(fake)
    assert instance.set_paused("a", True).is_paused is True
    assert bodies[0][0]["update_mask"] == "is_paused" and bodies[0][1] == {"is_paused": True}
    assert instance.delete_dag_run("a", "r") is None


def test_dag_sources_v1_uses_file_token_and_v2_dag_id() -> None:
    fake1 = FakeAirflow("v1")
    token = dag_v1("a")["file_token"]
    fake1.add("GET", f"/api/v1/dagSources/{token}", lambda r: json_response(200, {"content": "# a.py"}))
    instance1 = make_instance(fake1)
    dag = Dag(dag_id="a", file_token=token)
    assert instance1.get_dag_source(dag) == "# a.py"

    fake2 = FakeAirflow("v2")
    for i in range(5):
        fake2.add(
            "GET",
            f"/api/v2/dagSources/d{i}",
            lambda r, i=i: json_response(200, {"content": f"# d{i}", "dag_id": f"d{i}", "version_number": 1}),
        )
    instance2 = make_instance(fake2)
    sources = instance2.get_dag_sources([Dag(dag_id=f"d{i}") for i in range(5)], max_workers=3)
    assert sources == {f"d{i}": f"# d{i}" for i in range(5)}
    assert all(r.headers["accept"] == "application/json" for r in fake2.api("GET", "/dagSources/d0"))


# -- logging ----------------------------------------------------------------------------------------------------


def test_debug_log_has_one_line_per_request_and_no_secrets(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeAirflow("v2")
    fake.add("GET", "/api/v2/dags/a", lambda r: json_response(200, dag_v2("a")))
    instance = make_instance(fake)
    with caplog.at_level(logging.DEBUG, logger="dagster_airpeer.airflow"):
        instance.get_dag("a")
    lines = [r.getMessage() for r in caplog.records if r.name == "dagster_airpeer.airflow"]
    assert any(line.startswith("GET /api/v2/dags/a -> 200 in ") for line in lines)
    text = "\n".join(lines)
    assert fake.password not in text and fake.issued[0] not in text


def test_verify_accepts_a_ca_bundle_path_and_names_a_bad_one(tmp_path: Any) -> None:
    import certifi

    fake = FakeAirflow("v2")
    assert make_instance(fake, verify=certifi.where()).api_version == "v2"
    missing = str(tmp_path / "no-such-ca.pem")
    with pytest.raises(AirflowConfigError, match="`verify`"):
        make_instance(fake, verify=missing).api_version  # noqa: B018
