"""The proxied task's GraphQL conversation with Dagster, against an in-memory fake webserver (httpx.MockTransport).

Time is a fake clock advanced by the fake sleep: no wall-clock waits. The GraphQL documents are also validated
against the schema of the installed dagster-graphql, so a field Dagster renames fails here, not in production.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest

from dagster_airpeer.in_airflow import client as c
from dagster_airpeer.in_airflow.naming import proxy_job_name

TASK = c.ProxyTask(
    instance_name="af",
    dag_id="rebuild",
    run_id="scheduled__2024-01-02T00:00:00+00:00",
    task_id="load",
    try_number=1,
    logical_date=datetime(2024, 1, 2, tzinfo=timezone.utc),
)
JOB = proxy_job_name("af", "rebuild", "load")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass
class FakeDagster:
    """Runs, one code location `loc`/`__repository__` defining `jobs`, and scripted run progress."""

    jobs: dict[str, dict[str, str]] = field(default_factory=lambda: {JOB: {}})
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: run id -> the statuses it goes through, one per poll.
    script: dict[str, list[str]] = field(default_factory=dict)
    default_script: list[str] = field(default_factory=lambda: ["STARTED", "SUCCESS"])
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    launches: list[dict[str, Any]] = field(default_factory=list)
    terminated: list[str] = field(default_factory=list)
    #: status codes (or "down") answered before handling, one per request.
    outages: list[Any] = field(default_factory=list)
    #: the launch is recorded but its answer is lost (connection reset) this many times.
    lose_launch_answers: int = 0
    #: runs that Dagster retries when they fail (tagged dagster/will_retry, a child run with their tags).
    dagster_retries: set[str] = field(default_factory=set)
    #: a run whose launch answer was lost stays out of this many run listings (the webserver still creating it).
    hide_lost_runs_for: int = 0
    hidden: dict[str, int] = field(default_factory=dict)

    def add_run(self, status: str, tags: dict[str, str]) -> str:
        run_id = f"run{len(self.runs) + 1}"
        self.runs[run_id] = {"runId": run_id, "status": status, "tags": tags}
        return run_id

    def _runs_with(self, tags: list[dict[str, str]]) -> list[dict[str, Any]]:
        wanted = {t["key"]: t["value"] for t in tags}
        found = [r for r in self.runs.values() if all(r["tags"].get(k) == v for k, v in wanted.items())]
        return [
            {**r, "tags": [{"key": k, "value": v} for k, v in r["tags"].items()]} for r in reversed(found)
        ]

    def handler(self, request: httpx.Request) -> httpx.Response:
        if self.outages:
            outage = self.outages.pop(0)
            if outage == "down":
                raise httpx.ConnectError("connection refused", request=request)
            return httpx.Response(outage, text="busy")
        body = json.loads(request.content)
        query, variables = body["query"], body["variables"]
        op = re.search(r"(query|mutation) (\w+)", query).group(2)  # type: ignore[union-attr]
        self.requests.append(op)
        data: dict[str, Any]
        if op in ("AirpeerProxyFind", "AirpeerProxyRuns"):
            results = [r for r in self._runs_with(variables["tags"]) if self.hidden.get(r["runId"], 0) <= 0]
            self.hidden = {run_id: left - 1 for run_id, left in self.hidden.items()}
            data = {"runsOrError": {"__typename": "Runs", "results": results}}
            if op == "AirpeerProxyFind":
                data["workspaceOrError"] = {
                    "__typename": "Workspace",
                    "locationEntries": [
                        {
                            "name": "loc",
                            "locationOrLoadError": {
                                "__typename": "RepositoryLocation",
                                "repositories": [{"name": "__repository__"}],
                            },
                        }
                    ],
                }
        elif op == "AirpeerProxyJob":
            data = {}
            for alias in re.findall(r"(r\d+): pipelineOrError", query):
                i = alias[1:]
                key = (variables[f"l{i}"], variables[f"r{i}"], variables["job"])
                if key[:2] == ("loc", "__repository__") and key[2] in self.jobs:
                    tags = [{"key": k, "value": v} for k, v in self.jobs[key[2]].items()]
                    data[alias] = {"__typename": "Pipeline", "name": key[2], "tags": tags}
                else:
                    data[alias] = {"__typename": "PipelineNotFoundError", "message": "not found"}
        elif op == "AirpeerProxyLaunch":
            params = variables["executionParams"]
            self.launches.append(params)
            tags = {t["key"]: t["value"] for t in params["executionMetadata"]["tags"]}
            run_id = self.add_run("QUEUED", tags)
            if self.lose_launch_answers:
                self.lose_launch_answers -= 1
                if self.hide_lost_runs_for:
                    self.hidden[run_id] = self.hide_lost_runs_for
                raise httpx.ReadError("connection reset", request=request)
            data = {
                "launchRun": {"__typename": "LaunchRunSuccess", "run": {"runId": run_id, "status": "QUEUED"}}
            }
        elif op == "AirpeerProxyRun":
            run = self.runs[variables["runId"]]
            steps = self.script.setdefault(run["runId"], list(self.default_script))
            if steps and run["status"] not in ("SUCCESS", "FAILURE", "CANCELED"):
                run["status"] = steps.pop(0)
                if run["status"] == "FAILURE" and run["runId"] in self.dagster_retries:
                    child_tags = {**run["tags"], "dagster/parent_run_id": run["runId"]}
                    run["tags"]["dagster/will_retry"] = "true"
                    self.add_run("QUEUED", child_tags)
            tags = [{"key": k, "value": v} for k, v in run["tags"].items()]
            data = {
                "runOrError": {
                    "__typename": "Run",
                    "runId": run["runId"],
                    "status": run["status"],
                    "tags": tags,
                }
            }
        elif op == "AirpeerProxyLogs":
            events = self.events.get(variables["runId"], [])
            data = {
                "logsForRun": {
                    "__typename": "EventConnection",
                    "cursor": "1",
                    "hasMore": False,
                    "events": events,
                }
            }
        elif op == "AirpeerProxyTerminate":
            self.terminated.append(variables["runId"])
            self.runs[variables["runId"]]["status"] = "CANCELED"
            data = {"terminateRun": {"__typename": "TerminateRunSuccess"}}
        else:  # pragma: no cover - a query this fake does not know
            raise AssertionError(op)
        return httpx.Response(200, json={"data": data})


def _proxy(
    fake: FakeDagster,
    clock: Clock,
    task: c.ProxyTask = TASK,
    handler: Callable[[httpx.Request], httpx.Response] | None = None,
    **kwargs: Any,
) -> c.DagsterRunProxy:
    """A proxy talking to `fake`, or to `handler` (which wraps `fake.handler` to script a fault)."""
    client = c.DagsterGraphQLClient(
        "http://dagster:3000",
        {"Dagster-Cloud-Api-Token": "tok"},
        transport=httpx.MockTransport(handler or fake.handler),
        sleep=clock.sleep,
        initial_backoff=0.1,
    )
    return c.DagsterRunProxy(client, task, sleep=clock.sleep, clock=clock, **kwargs)


def test_launches_the_tasks_job_tagged_and_waits_for_success() -> None:
    fake, clock = FakeDagster(), Clock()
    proxy = _proxy(fake, clock)
    assert proxy.run() == "run1"
    assert fake.requests == [
        "AirpeerProxyFind",
        "AirpeerProxyJob",
        "AirpeerProxyLaunch",
        "AirpeerProxyRun",
        "AirpeerProxyRun",
    ]
    (launch,) = fake.launches
    assert launch["selector"] == {
        "repositoryLocationName": "loc",
        "repositoryName": "__repository__",
        "jobName": JOB,
    }
    tags = {t["key"]: t["value"] for t in launch["executionMetadata"]["tags"]}
    assert tags == {
        "airpeer/airflow_instance": "af",
        "airpeer/dag_id": "rebuild",
        "airpeer/run_id": TASK.run_id,
        "airpeer/task_id": "load",
        "airpeer/try_number": "1",
        "airpeer/logical_date": "2024-01-02T00:00:00+00:00",
    }


def test_a_configured_location_skips_the_workspace_names_but_not_the_job_check() -> None:
    fake, clock = FakeDagster(), Clock()
    assert _proxy(fake, clock, location_name="loc").run() == "run1"
    assert fake.launches[0]["selector"]["repositoryLocationName"] == "loc"


def test_partitioned_job_gets_the_partition_of_the_logical_date() -> None:
    fake = FakeDagster(jobs={JOB: {"airpeer/partition_fmt": "%Y-%m-%d", "airpeer/partition_timezone": "UTC"}})
    _proxy(fake, Clock()).run()
    tags = {t["key"]: t["value"] for t in fake.launches[0]["executionMetadata"]["tags"]}
    assert tags["dagster/partition"] == "2024-01-02"


def test_partitioned_job_without_logical_date_is_a_clear_error() -> None:
    fake = FakeDagster(jobs={JOB: {"airpeer/partition_fmt": "%Y-%m-%d"}})
    task = c.ProxyTask("af", "rebuild", "manual__x", "load", 1, None)
    with pytest.raises(c.DagsterProxyError, match="no logical date"):
        _proxy(fake, Clock(), task=task).run()
    assert fake.launches == []


@pytest.mark.parametrize("status", ["STARTED", "QUEUED", "SUCCESS"])
def test_an_airflow_retry_attaches_to_the_earlier_tries_run(status: str) -> None:
    fake, clock = FakeDagster(), Clock()
    tags = {t["key"]: t["value"] for t in TASK.match_tags()} | {"airpeer/try_number": "1"}
    earlier = fake.add_run(status, tags)
    retry = c.ProxyTask(**{**TASK.__dict__, "try_number": 2})
    assert _proxy(fake, clock, task=retry).run() == earlier
    assert fake.launches == []
    assert "AirpeerProxyJob" not in fake.requests


def test_a_retry_after_a_failed_run_launches_a_new_one_and_other_dags_runs_are_not_matched() -> None:
    fake, clock = FakeDagster(), Clock()
    tags = {t["key"]: t["value"] for t in TASK.match_tags()}
    fake.add_run("FAILURE", tags)
    # Same run id (scheduled__...), other DAG: never attached to.
    fake.add_run("STARTED", {**tags, "airpeer/dag_id": "other_dag"})
    retry = c.ProxyTask(**{**TASK.__dict__, "try_number": 2})
    assert _proxy(fake, clock, task=retry).run() == "run3"
    assert len(fake.launches) == 1


def test_a_failed_run_fails_with_the_failed_steps_error_and_the_run_url() -> None:
    fake, clock = FakeDagster(default_script=["STARTED", "FAILURE"]), Clock()
    fake.events["run1"] = [
        {"__typename": "ExecutionStepStartEvent"},
        {
            "__typename": "ExecutionStepFailureEvent",
            "stepKey": "raw_customers",
            # Dagster wraps the raised error; the user's is the chain's last link.
            "error": {
                "message": 'DagsterExecutionStepExecutionError: Error occurred while executing op "raw_customers":',
                "errorChain": [{"error": {"message": "ValueError: bad row 7\n"}}],
            },
        },
        {"__typename": "RunFailureEvent", "message": "Execution of run failed.", "error": None},
    ]
    with pytest.raises(c.DagsterRunFailedError) as err:
        _proxy(fake, clock).run()
    message = str(err.value)
    assert "step 'raw_customers' failed: ValueError: bad row 7" in message
    assert "http://dagster:3000/runs/run1" in message


def test_a_cancelled_run_fails_the_task() -> None:
    fake = FakeDagster(default_script=["CANCELED"])
    with pytest.raises(c.DagsterRunFailedError, match="cancelled"):
        _proxy(fake, Clock()).run()


def test_a_run_dagster_retries_is_followed_to_its_retry() -> None:
    fake, clock = FakeDagster(dagster_retries={"run1"}), Clock()
    fake.script["run1"] = ["STARTED", "FAILURE"]
    assert _proxy(fake, clock).run() == "run2"
    assert fake.runs["run2"]["tags"]["airpeer/task_id"] == "load"
    assert len(fake.launches) == 1


def test_the_deadline_terminates_the_run_and_fails() -> None:
    fake, clock = FakeDagster(default_script=["STARTED"] * 10_000), Clock()
    with pytest.raises(c.DagsterDeadlineError, match="60 s") as err:
        _proxy(fake, clock, deadline_seconds=60, poll_max=8, poll_steady_seconds=3).run()
    assert fake.terminated == ["run1"]
    assert "http://dagster:3000/runs/run1" in str(err.value)
    assert clock.now - 1000.0 <= 60 + 1e-6
    # Every second for the first 3 s, then backing off: 1, 1, 1, 2, 4, 8, 8, ...
    assert clock.sleeps[:7] == [1.0, 1.0, 1.0, 2.0, 4.0, 8.0, 8.0]


def test_a_run_is_polled_every_second_for_its_first_minute_by_default() -> None:
    fake, clock = FakeDagster(default_script=["STARTED"] * 100 + ["SUCCESS"]), Clock()
    assert _proxy(fake, clock).run() == "run1"
    assert clock.sleeps[:60] == [1.0] * 60 and clock.sleeps[60:63] == [2.0, 4.0, 8.0]


def test_webserver_down_at_start_fails_clearly_after_the_retries() -> None:
    fake, clock = FakeDagster(outages=["down"] * 100), Clock()
    with pytest.raises(c.DagsterUnreachableError, match="http://dagster:3000 did not answer: ConnectError"):
        _proxy(fake, clock).run()
    assert fake.launches == []


def test_transient_errors_are_retried_with_backoff() -> None:
    fake, clock = FakeDagster(outages=["down", 503, 429]), Clock()
    assert _proxy(fake, clock).run() == "run1"
    assert len(fake.launches) == 1


def test_webserver_down_while_waiting_keeps_waiting_for_the_run() -> None:
    fake, clock = FakeDagster(), Clock()
    original = fake.handler
    polls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if b"AirpeerProxyRun(" in request.content and polls["n"] < 12:
            polls["n"] += 1
            raise httpx.ConnectError("refused", request=request)
        return original(request)

    proxy = _proxy(fake, clock, handler=handler)
    assert proxy.run() == "run1"
    assert polls["n"] == 12


def test_a_lost_launch_answer_attaches_to_the_run_it_created_instead_of_launching_twice() -> None:
    fake, clock = FakeDagster(lose_launch_answers=1), Clock()
    assert _proxy(fake, clock).run() == "run1"
    assert len(fake.launches) == 1 and len(fake.runs) == 1


def test_a_lost_launch_whose_run_shows_up_late_is_not_launched_again() -> None:
    # The client gave up on the answer while the webserver was still creating the run (seen on a loaded
    # machine against a real dagster dev): the first listings do not show it yet.
    fake, clock = FakeDagster(lose_launch_answers=1, hide_lost_runs_for=3), Clock()
    assert _proxy(fake, clock).run() == "run1"
    assert len(fake.launches) == 1 and fake.terminated == []


def test_a_lost_launch_that_created_nothing_is_launched_again_after_the_settle_time() -> None:
    fake, clock = FakeDagster(), Clock()
    original = fake.handler
    launches = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if b"AirpeerProxyLaunch(" in request.content:
            launches["n"] += 1
            if launches["n"] == 1:  # the connection broke before the webserver created anything
                raise httpx.ReadError("connection reset", request=request)
        return original(request)

    proxy = _proxy(fake, clock, handler=handler, launch_settle_seconds=20)
    started = clock.now
    assert proxy.run() == "run1"
    assert launches["n"] == 2 and len(fake.runs) == 1
    assert clock.now - started >= 20  # "no run" counted only from a listing 20 s after the lost launch


def test_a_lost_launch_seen_only_after_the_relaunch_leaves_one_run() -> None:
    # Hidden past the settle time: the proxy launches again, then sees two runs of this try, keeps the
    # oldest and terminates the other, so one run materializes the assets.
    fake, clock = FakeDagster(lose_launch_answers=1, hide_lost_runs_for=1), Clock()
    proxy = _proxy(fake, clock, launch_settle_seconds=1)
    assert proxy.run() == "run1"
    assert len(fake.launches) == 2 and fake.terminated == ["run2"]
    assert fake.runs["run2"]["status"] == "CANCELED"


def test_a_relaunch_not_listed_yet_is_terminated_when_the_lost_one_shows() -> None:
    # After the relaunch the listing shows the lost launch's run but not yet the new one: the new one goes.
    fake, clock = FakeDagster(lose_launch_answers=1, hide_lost_runs_for=1), Clock()
    original = fake.handler
    launches = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if b"AirpeerProxyLaunch(" in request.content:
            launches["n"] += 1
        response = original(request)
        if launches["n"] == 2 and b"AirpeerProxyRuns(" in request.content:
            body = json.loads(response.content)
            body["data"]["runsOrError"]["results"] = [
                r for r in body["data"]["runsOrError"]["results"] if r["runId"] != "run2"
            ]
            return httpx.Response(200, json=body)
        return response

    proxy = _proxy(fake, clock, handler=handler, launch_settle_seconds=1)
    assert proxy.run() == "run1"
    assert launches["n"] == 2 and fake.terminated == ["run2"]


def test_dagster_unreachable_after_a_lost_launch_does_not_launch_blindly() -> None:
    # Every listing refused for a while after the lost answer: the proxy keeps asking, it does not relaunch.
    fake, clock = FakeDagster(lose_launch_answers=1), Clock()
    original = fake.handler
    refused = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if b"AirpeerProxyRuns(" in request.content and refused["n"] < 8:
            refused["n"] += 1
            raise httpx.ConnectError("refused", request=request)
        return original(request)

    proxy = _proxy(fake, clock, handler=handler)
    assert proxy.run() == "run1"
    assert len(fake.launches) == 1 and refused["n"] == 8


def test_missing_job_names_the_task_and_what_to_add() -> None:
    fake = FakeDagster(jobs={})
    with pytest.raises(
        c.DagsterJobNotFoundError, match=r"defines job .*task 'load' of DAG 'rebuild'.*proxy_jobs"
    ):
        _proxy(fake, Clock()).run()


@pytest.mark.parametrize(
    ("status", "match"),
    [(401, "auth headers"), (403, "auth headers"), (404, "webserver"), (405, "webserver")],
)
def test_wrong_token_or_url_is_one_clear_refusal(status: int, match: str) -> None:
    fake, clock = FakeDagster(outages=[status]), Clock()
    with pytest.raises(c.DagsterRequestError, match=match):
        _proxy(fake, clock).run()
    assert clock.sleeps == []


def test_terminate_cancels_the_followed_run_once() -> None:
    fake, clock = FakeDagster(default_script=["STARTED"] * 5), Clock()
    proxy = _proxy(fake, clock, deadline_seconds=3)
    with pytest.raises(c.DagsterDeadlineError):
        proxy.run()
    proxy.terminate()
    assert fake.terminated == ["run1"]


def test_the_documents_are_valid_against_dagsters_graphql_schema() -> None:
    graphql = pytest.importorskip("graphql")
    schema_module = pytest.importorskip("dagster_graphql.schema")
    schema = schema_module.create_schema().graphql_schema
    documents = [
        c.FIND_QUERY,
        c.RUNS_QUERY,
        c.RUN_QUERY,
        c.LAUNCH_MUTATION,
        c.TERMINATE_MUTATION,
        c.LOGS_QUERY,
        c.job_query([("a", "b"), ("c", "d")]),
    ]
    for document in documents:
        errors = graphql.validate(schema, graphql.parse(document))
        assert not errors, (document, errors)
