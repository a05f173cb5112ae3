"""The proxied task's side of the conversation with Dagster: GraphQL over httpx, retried with tenacity.

No Dagster import here: this runs in Airflow's environment. What the proxy sends, per Airflow task run:

1. one `find` query: the runs already tagged with (instance, dag_id, run_id, task_id), to attach to on an
   Airflow retry, and the names of the workspace's repositories (a few strings, not their assets);
2. one `job` query: the task's job (`naming.proxy_job_name`) looked up in those repositories, with its tags
   (partition format); skipped when the repository is configured;
3. `launchRun` of that job, tagged; then `runOrError` polls with backoff until the run ends.

A failed run is explained by its failed steps' errors (`logsForRun`); a run Dagster will retry is followed to
its retry. `terminateRun` cancels it when the Airflow task is killed or the deadline passes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import httpx

from ..airflow._retry import BodyNotJSON, RetryableStatus, build_retrying, parse_retry_after
from .naming import (
    DAG_ID_TAG,
    INSTANCE_TAG,
    LOGICAL_DATE_TAG,
    PARENT_RUN_ID_TAG,
    PARTITION_FMT_TAG,
    PARTITION_TAG,
    PARTITION_TIMEZONE_TAG,
    RUN_ID_TAG,
    TASK_ID_TAG,
    TRY_NUMBER_TAG,
    WILL_RETRY_TAG,
    proxy_job_name,
)

log = logging.getLogger(__name__)


class TaskLog(Protocol):
    """What the proxy logs through: a `logging.Logger` or the task logger of Airflow 2 or 3."""

    def info(self, msg: Any, /, *args: Any) -> Any: ...
    def warning(self, msg: Any, /, *args: Any) -> Any: ...
    def error(self, msg: Any, /, *args: Any) -> Any: ...


DEFAULT_REPOSITORY_NAME = "__repository__"
"""The repository of a `dagster.Definitions` code location."""

#: Dagster run statuses, as GraphQL's RunStatus enum names them.
IN_PROGRESS_STATUSES = frozenset({"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING", "MANAGED"})
FAILED_STATUSES = frozenset({"FAILURE", "CANCELED"})


class DagsterProxyError(Exception):
    """The proxied task could not get its assets materialized by Dagster; the message says why."""


class DagsterUnreachableError(DagsterProxyError):
    """The Dagster webserver did not answer (connection refused, timeouts, 5xx) after the retries."""


class DagsterRequestError(DagsterProxyError):
    """Dagster refused a request: bad credentials, wrong URL, GraphQL errors. Not retried."""


class DagsterJobNotFoundError(DagsterProxyError):
    """No code location defines the proxy job of this task."""


class DagsterRunFailedError(DagsterProxyError):
    """The Dagster run failed or was cancelled."""


class DagsterDeadlineError(DagsterProxyError):
    """The Dagster run did not finish before the proxy's deadline (it was asked to terminate)."""


class DagsterGraphQLClient:
    """POSTs GraphQL documents to a Dagster webserver's `/graphql`, with timeouts and retries with backoff.

    `url` is the webserver's (or Dagster+ deployment's) base URL, e.g. `http://localhost:3000` or
    `https://org.dagster.cloud/prod`; `headers` carries auth, e.g. `{"Dagster-Cloud-Api-Token": token}`.
    """

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str] | None = None,
        *,
        timeout: float = 10.0,
        max_retries: int = 4,
        initial_backoff: float = 0.5,
        max_backoff: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url.rstrip("/")
        self._max_retries = max_retries
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=self.url, headers=dict(headers or {}), timeout=timeout, transport=transport
        )

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def __enter__(self) -> DagsterGraphQLClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _post_once(self, query: str, variables: Mapping[str, Any]) -> dict[str, Any]:
        response = self._http.post("/graphql", json={"query": query, "variables": dict(variables)})
        if response.status_code >= 500 or response.status_code == 429:
            raise RetryableStatus(response, parse_retry_after(response.headers.get("Retry-After")))
        if response.status_code in (401, 403):
            raise DagsterRequestError(
                f"Dagster at {self.url} refused the request (HTTP {response.status_code}): check the auth "
                "headers (for Dagster+, a `Dagster-Cloud-Api-Token` of an agent or user token)."
            )
        # 405: the webserver serves its UI's pages under any other path, and they refuse a POST.
        if response.status_code in (404, 405):
            raise DagsterRequestError(
                f"{self.url}/graphql answered {response.status_code}: is {self.url} the Dagster webserver "
                "(or Dagster+ deployment) URL?"
            )
        if response.status_code >= 400:
            raise DagsterRequestError(
                f"Dagster at {self.url} answered HTTP {response.status_code}: {response.text[:500]}"
            )
        try:
            body = response.json()
        except ValueError:
            raise BodyNotJSON(response) from None
        if not isinstance(body, dict):
            raise BodyNotJSON(response)
        if body.get("errors"):
            messages = "; ".join(str(e.get("message", e)) for e in body["errors"])
            raise DagsterRequestError(f"Dagster at {self.url} rejected the GraphQL request: {messages}")
        data = body.get("data")
        if not isinstance(data, dict):
            raise BodyNotJSON(response)
        return data

    def execute(
        self,
        query: str,
        variables: Mapping[str, Any] | None = None,
        *,
        retry: bool = True,
        deadline: float | None = None,
    ) -> dict[str, Any]:
        """The `data` of the answer. `deadline` (a `time.monotonic()` instant) bounds the retries.

        `retry=False` for a mutation that must not be sent twice blindly (launchRun): the caller checks first.
        """
        retrying = build_retrying(
            max_retries=self._max_retries if retry else 0,
            initial_backoff=self._initial_backoff,
            max_backoff=self._max_backoff,
            sleep=self._sleep,
            deadline=deadline,
        )
        try:
            return retrying(self._post_once, query, variables or {})
        except (httpx.TransportError, RetryableStatus, BodyNotJSON) as exc:
            raise DagsterUnreachableError(f"Dagster at {self.url} did not answer: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    if isinstance(exc, RetryableStatus):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, BodyNotJSON):
        return "the answer was not JSON"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


FIND_QUERY = """
query AirpeerProxyFind($tags: [ExecutionTag!]) {
  runsOrError(filter: {tags: $tags}, limit: 50) {
    __typename
    ... on Runs { results { runId status tags { key value } } }
    ... on PythonError { message }
  }
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        locationOrLoadError {
          __typename
          ... on RepositoryLocation { repositories { name } }
          ... on PythonError { message }
        }
      }
    }
    ... on PythonError { message }
  }
}
"""

RUNS_QUERY = """
query AirpeerProxyRuns($tags: [ExecutionTag!]) {
  runsOrError(filter: {tags: $tags}, limit: 50) {
    __typename
    ... on Runs { results { runId status tags { key value } } }
    ... on PythonError { message }
  }
}
"""

RUN_QUERY = """
query AirpeerProxyRun($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status tags { key value } }
    ... on RunNotFoundError { message }
    ... on PythonError { message }
  }
}
"""

LAUNCH_MUTATION = """
mutation AirpeerProxyLaunch($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PipelineNotFoundError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on RunConflict { message }
    ... on UnauthorizedError { message }
    ... on PythonError { message }
  }
}
"""

TERMINATE_MUTATION = """
mutation AirpeerProxyTerminate($runId: String!) {
  terminateRun(runId: $runId, terminatePolicy: SAFE_TERMINATE) {
    __typename
    ... on TerminateRunFailure { message }
    ... on RunNotFoundError { message }
    ... on UnauthorizedError { message }
    ... on PythonError { message }
  }
}
"""

LOGS_QUERY = """
query AirpeerProxyLogs($runId: ID!, $cursor: String) {
  logsForRun(runId: $runId, afterCursor: $cursor, limit: 1000) {
    __typename
    ... on EventConnection {
      cursor
      hasMore
      events {
        __typename
        ... on ExecutionStepFailureEvent { stepKey error { message errorChain { error { message } } } }
        ... on RunFailureEvent { message error { message errorChain { error { message } } } }
      }
    }
    ... on RunNotFoundError { message }
    ... on PythonError { message }
  }
}
"""


def job_query(selectors: Sequence[tuple[str, str]]) -> str:
    """One document looking the job up in every (location, repository): one aliased field each."""
    fields = "\n".join(
        f"""  r{i}: pipelineOrError(params: {{repositoryLocationName: $l{i}, repositoryName: $r{i}, pipelineName: $job}}) {{
    __typename
    ... on Pipeline {{ name tags {{ key value }} }}
    ... on PythonError {{ message }}
  }}"""
        for i in range(len(selectors))
    )
    params = ", ".join(f"$l{i}: String!, $r{i}: String!" for i in range(len(selectors)))
    return f"query AirpeerProxyJob($job: String!, {params}) {{\n{fields}\n}}\n"


@dataclass(frozen=True)
class ProxyTask:
    """The Airflow task run being proxied, as the proxy tags its Dagster run."""

    instance_name: str
    dag_id: str
    run_id: str
    task_id: str
    try_number: int
    logical_date: datetime | None = None

    @property
    def job_name(self) -> str:
        """The Dagster job of this task (`naming.proxy_job_name`)."""
        return proxy_job_name(self.instance_name, self.dag_id, self.task_id)

    def match_tags(self) -> list[dict[str, str]]:
        """The tags an earlier try's run carries too: what a retry attaches by."""
        return [
            {"key": INSTANCE_TAG, "value": self.instance_name},
            {"key": DAG_ID_TAG, "value": self.dag_id},
            {"key": RUN_ID_TAG, "value": self.run_id},
            {"key": TASK_ID_TAG, "value": self.task_id},
        ]


@dataclass
class _Job:
    location: str
    repository: str
    tags: dict[str, str] = field(default_factory=dict)


def _tags(run: Mapping[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run.get("tags") or []}


def _root_error(error: Any) -> str:
    """The user's error of a Dagster error: Dagster wraps it ("Error occurred while executing op ..."),
    the raised exception is the last link of the chain."""
    if not isinstance(error, dict):
        return ""
    messages = [error.get("message") or ""] + [
        (link.get("error") or {}).get("message") or "" for link in error.get("errorChain") or []
    ]
    messages = [m.strip() for m in messages if m.strip()]
    return messages[-1] if messages else ""


def _ok(field_value: Any, typename: str, what: str) -> Any:
    if not isinstance(field_value, dict) or field_value.get("__typename") != typename:
        message = field_value.get("message") if isinstance(field_value, dict) else None
        kind = field_value.get("__typename") if isinstance(field_value, dict) else type(field_value).__name__
        raise DagsterRequestError(f"Dagster could not {what}: {kind}: {message or 'no message'}")
    return field_value


class DagsterRunProxy:
    """Gets the assets of one proxied Airflow task materialized by one Dagster run, and waits for it.

    `deadline_seconds` bounds the whole wait. The run is polled every `poll_initial` seconds for its first
    `poll_steady_seconds`, then at intervals doubling up to `poll_max`.
    `location_name`/`repository_name` skip the job lookup when the code location is known.
    `launch_settle_seconds`: after a launch whose answer was lost, how long after sending it an answer of "no
    run of this try" must come before the proxy launches again (the webserver may still be creating the run).
    """

    def __init__(
        self,
        client: DagsterGraphQLClient,
        task: ProxyTask,
        *,
        location_name: str | None = None,
        repository_name: str | None = None,
        asset_selection: Sequence[Sequence[str]] | None = None,
        deadline_seconds: float = 24 * 3600.0,
        poll_initial: float = 1.0,
        poll_max: float = 15.0,
        launch_settle_seconds: float = 30.0,
        poll_steady_seconds: float = 60.0,
        logger: TaskLog | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.task = task
        self.location_name = location_name
        self.repository_name = repository_name
        self.asset_selection = [list(k) for k in asset_selection] if asset_selection is not None else None
        self.poll_initial = poll_initial
        self.poll_max = poll_max
        self.launch_settle_seconds = launch_settle_seconds
        self.poll_steady_seconds = poll_steady_seconds
        self.log: TaskLog = logger or log
        self._sleep = sleep
        self._clock = clock
        self._deadline = clock() + deadline_seconds
        self._deadline_seconds = deadline_seconds
        #: The Dagster run followed, once launched or attached to.
        self.run_id: str | None = None
        self._finished = False

    def run_url(self, run_id: str) -> str:
        """The run's page in the Dagster UI."""
        return f"{self.client.url}/runs/{run_id}"

    # -- the whole flow -------------------------------------------------------------------------------------

    def run(self) -> str:
        """Launch (or attach to) the task's Dagster run and wait until it succeeds; its run id.

        Raises `DagsterProxyError` subclasses with a message fit for the Airflow task log.
        """
        data = self.client.execute(FIND_QUERY, {"tags": self.task.match_tags()}, deadline=self._deadline)
        existing = self._attachable(_ok(data["runsOrError"], "Runs", "list runs")["results"])
        if existing is not None:
            self.run_id = existing
            self.log.info(
                "Attaching to Dagster run %s of an earlier try of this task: %s",
                existing,
                self.run_url(existing),
            )
        else:
            job = self._find_job(data["workspaceOrError"])
            self.run_id = self._launch(job)
        return self._wait()

    def _attachable(self, runs: Sequence[Mapping[str, Any]]) -> str | None:
        """A run of an earlier try that is going, succeeded, or will be retried by Dagster (newest first)."""
        for run in runs:  # Dagster lists runs newest first.
            status = run["status"]
            if status in IN_PROGRESS_STATUSES or status == "SUCCESS":
                return str(run["runId"])
            if status == "FAILURE" and _tags(run).get(WILL_RETRY_TAG) == "true":
                return str(run["runId"])
        return None

    def _find_job(self, workspace: Any) -> _Job:
        job_name = self.task.job_name
        if self.location_name is not None:
            selectors = [(self.location_name, self.repository_name or DEFAULT_REPOSITORY_NAME)]
        else:
            entries = _ok(workspace, "Workspace", "list the code locations")["locationEntries"]
            selectors = []
            broken = []
            for entry in entries:
                location = entry.get("locationOrLoadError") or {}
                if location.get("__typename") == "RepositoryLocation":
                    selectors.extend(
                        (entry["name"], repo["name"])
                        for repo in location["repositories"]
                        if self.repository_name is None or repo["name"] == self.repository_name
                    )
                elif location.get("__typename") == "PythonError":
                    first_line = (location.get("message") or "").strip().split("\n")[0]
                    broken.append(f"{entry['name']} ({first_line})")
            if not selectors:
                raise DagsterJobNotFoundError(
                    f"Dagster at {self.client.url} has no loaded code location"
                    + (f"; failed to load: {', '.join(broken)}" if broken else "")
                    + f". Cannot run job {job_name!r} for task {self.task.task_id!r} of DAG {self.task.dag_id!r}."
                )
        variables: dict[str, str] = {"job": job_name}
        for i, (loc, repo) in enumerate(selectors):
            variables[f"l{i}"] = loc
            variables[f"r{i}"] = repo
        data = self.client.execute(job_query(selectors), variables, deadline=self._deadline)
        found = []
        for i, (loc, repo) in enumerate(selectors):
            answer = data.get(f"r{i}") or {}
            if answer.get("__typename") == "Pipeline":
                found.append(_Job(loc, repo, {t["key"]: t["value"] for t in answer.get("tags") or []}))
        if not found:
            raise DagsterJobNotFoundError(
                f"No Dagster code location at {self.client.url} defines job {job_name!r} (searched "
                f"{', '.join(f'{loc}/{repo}' for loc, repo in selectors)}): task {self.task.task_id!r} of DAG "
                f"{self.task.dag_id!r} on Airflow instance {self.task.instance_name!r} is not mapped to assets "
                "there, or the code location does not add dagster_airpeer.migrate.proxy_jobs(...)."
            )
        if len(found) > 1:
            raise DagsterJobNotFoundError(
                f"Job {job_name!r} is defined in several code locations ("
                f"{', '.join(f'{j.location}/{j.repository}' for j in found)}): set the operator's "
                "dagster_location_name to choose one."
            )
        return found[0]

    def _partition_key(self, job: _Job) -> str | None:
        fmt = job.tags.get(PARTITION_FMT_TAG)
        if fmt is None:
            return None
        if self.task.logical_date is None:
            raise DagsterProxyError(
                f"The assets of job {self.task.job_name!r} are partitioned by time, but Airflow run "
                f"{self.task.run_id!r} has no logical date to choose the partition from."
            )
        zone = ZoneInfo(job.tags.get(PARTITION_TIMEZONE_TAG) or "UTC")
        return self.task.logical_date.astimezone(zone).strftime(fmt)

    def _run_tags(self, job: _Job) -> list[dict[str, str]]:
        tags = [*self.task.match_tags(), {"key": TRY_NUMBER_TAG, "value": str(self.task.try_number)}]
        if self.task.logical_date is not None:
            tags.append({"key": LOGICAL_DATE_TAG, "value": self.task.logical_date.isoformat()})
        partition = self._partition_key(job)
        if partition is not None:
            tags.append({"key": PARTITION_TAG, "value": partition})
        return tags

    def _launch(self, job: _Job) -> str:
        selector: dict[str, Any] = {
            "repositoryLocationName": job.location,
            "repositoryName": job.repository,
            "jobName": self.task.job_name,
        }
        if self.asset_selection is not None:
            selector["assetSelection"] = [{"path": key} for key in self.asset_selection]
        params = {"selector": selector, "executionMetadata": {"tags": self._run_tags(job)}}
        try_tags = [*self.task.match_tags(), {"key": TRY_NUMBER_TAG, "value": str(self.task.try_number)}]
        ambiguous = False
        while True:
            started = self._clock()
            try:
                # Not retried blindly: a launch whose answer was lost may have created the run.
                data = self.client.execute(LAUNCH_MUTATION, {"executionParams": params}, retry=False)
            except DagsterUnreachableError as exc:
                self._check_deadline(f"launching job {self.task.job_name!r}: {exc}")
                self.log.warning("Launching the Dagster run failed (%s); checking whether it started", exc)
                ambiguous = True
                found = self._launched_meanwhile(try_tags, started)
                if found is not None:
                    return found
                continue
            result = data["launchRun"]
            if result.get("__typename") == "LaunchRunSuccess":
                run_id = str(result["run"]["runId"])
                if ambiguous:
                    # An earlier launch whose answer was lost may have created a run after all: keep one.
                    run_id = self._keep_one(try_tags, run_id)
                self.log.info(
                    "Launched Dagster run %s of job %s: %s", run_id, self.task.job_name, self.run_url(run_id)
                )
                return run_id
            if result.get("__typename") == "RunConfigValidationInvalid":
                message = "; ".join(e["message"] for e in result.get("errors") or [])
            else:
                message = result.get("message") or ""
            raise DagsterRequestError(
                f"Dagster refused to launch job {self.task.job_name!r}: {result.get('__typename')}: {message}"
            )

    def _runs_of_this_try(self, try_tags: list[dict[str, str]]) -> list[str] | None:
        """The ids of the runs tagged with this task try, oldest first; None when Dagster did not answer."""
        try:
            runs = self.client.execute(RUNS_QUERY, {"tags": try_tags}, deadline=self._deadline)
        except DagsterUnreachableError:
            return None
        results = _ok(runs["runsOrError"], "Runs", "list runs")["results"]
        return [str(r["runId"]) for r in reversed(results)]  # Dagster lists runs newest first

    def _launched_meanwhile(self, try_tags: list[dict[str, str]], started: float) -> str | None:
        """After a launch whose answer was lost: the run it created, or None once it surely created none.

        The webserver may still be creating the run when the client gives up on its answer, so "no run" counts
        only from an answer received `launch_settle_seconds` after that launch was sent; until then, and
        while Dagster does not answer at all, the proxy keeps looking (up to its deadline) instead of
        launching a second run.
        """
        backoff = self.poll_initial
        while True:
            self._sleep(backoff)
            backoff = min(backoff * 2, self.poll_max)
            asked = self._clock()
            runs = self._runs_of_this_try(try_tags)
            if runs:
                return runs[0]
            if runs is not None and asked - started >= self.launch_settle_seconds:
                return None
            self._check_deadline(f"checking whether job {self.task.job_name!r} was launched")

    def _keep_one(self, try_tags: list[dict[str, str]], launched: str) -> str:
        """The oldest run of this try; any other (a launch thought lost that did create a run) is terminated."""
        runs = self._runs_of_this_try(try_tags) or []
        if launched not in runs:  # the listing may not show the run just launched yet
            runs.append(launched)
        keep = runs[0]
        for extra in runs[1:]:
            self.log.warning(
                "This task try has two Dagster runs (a launch whose answer was lost did create one): "
                "terminating %s (%s), following %s",
                extra,
                self.run_url(extra),
                keep,
            )
            self._terminate_run(extra)
        return keep

    def _check_deadline(self, doing: str) -> None:
        if self._clock() >= self._deadline:
            if self.run_id is not None:
                self.terminate()
            where = f" ({self.run_url(self.run_id)})" if self.run_id else ""
            raise DagsterDeadlineError(
                f"Gave up after {self._deadline_seconds:g} s (the proxy's deadline) while {doing}{where}."
            )

    def _wait(self) -> str:
        assert self.run_id is not None
        interval = self.poll_initial
        # Most proxied runs end within a minute: polled every `poll_initial` until then, their end is seen
        # within a second, where doubling from the start (1, 2, 4, 8 s) added up to 7 s to a 5 s run
        # (BENCHMARKS.md, proxy overhead). Longer runs back off to `poll_max`.
        steady_until = self._clock() + self.poll_steady_seconds
        while True:
            run_id = self.run_id
            try:
                data = self.client.execute(RUN_QUERY, {"runId": run_id}, deadline=self._deadline)
            except DagsterUnreachableError as exc:
                # The run goes on in Dagster while the webserver is away: keep asking until the deadline.
                self.log.warning("Dagster did not answer while waiting for run %s: %s", run_id, exc)
                data = None
            if data is not None:
                run = _ok(data["runOrError"], "Run", f"read run {run_id}")
                status = run["status"]
                if status == "SUCCESS":
                    self._finished = True
                    self.log.info("Dagster run %s succeeded: %s", run_id, self.run_url(run_id))
                    return run_id
                if status in FAILED_STATUSES:
                    if status == "FAILURE" and _tags(run).get(WILL_RETRY_TAG) == "true":
                        retry = self._retry_of(run_id)
                        if retry is not None:
                            self.log.info(
                                "Dagster retried run %s as %s: %s", run_id, retry, self.run_url(retry)
                            )
                            self.run_id = retry
                            interval = self.poll_initial
                            continue
                    else:
                        self._finished = True
                        raise DagsterRunFailedError(self._failure_message(run_id, status))
            self._check_deadline(f"waiting for Dagster run {run_id}")
            self._sleep(min(interval, max(0.0, self._deadline - self._clock())))
            if self._clock() >= steady_until:
                interval = min(interval * 2, self.poll_max)

    def _retry_of(self, run_id: str) -> str | None:
        data = self.client.execute(
            RUNS_QUERY, {"tags": [{"key": PARENT_RUN_ID_TAG, "value": run_id}]}, deadline=self._deadline
        )
        results = _ok(data["runsOrError"], "Runs", "list runs")["results"]
        return str(results[0]["runId"]) if results else None

    def _failure_message(self, run_id: str, status: str) -> str:
        url = self.run_url(run_id)
        if status == "CANCELED":
            return f"Dagster run {run_id} of job {self.task.job_name!r} was cancelled: {url}"
        steps: list[str] = []
        run_errors: list[str] = []
        cursor: str | None = None
        try:
            for _ in range(20):  # at most 20,000 events read: enough to find the failures of a proxy run
                data = self.client.execute(
                    LOGS_QUERY, {"runId": run_id, "cursor": cursor}, deadline=self._deadline
                )
                page = _ok(data["logsForRun"], "EventConnection", f"read the events of run {run_id}")
                for event in page["events"]:
                    if event.get("__typename") == "ExecutionStepFailureEvent":
                        steps.append(
                            f"step {event.get('stepKey')!r} failed: {_root_error(event.get('error'))}"
                        )
                    elif event.get("__typename") == "RunFailureEvent":
                        run_errors.append(_root_error(event.get("error")) or event.get("message") or "")
                if not page["hasMore"]:
                    break
                cursor = page["cursor"]
        except DagsterProxyError as exc:
            steps.append(f"(its events could not be read: {exc})")
        detail = "; ".join(steps or [e for e in run_errors if e] or ["no step failure was recorded"])
        return f"Dagster run {run_id} of job {self.task.job_name!r} failed: {detail} ({url})"

    def terminate(self) -> None:
        """Ask Dagster to terminate the followed run (Airflow killed the task, or the deadline passed)."""
        run_id = self.run_id
        if run_id is None or self._finished:
            return
        # Once: Airflow may both raise in execute and call on_kill for the same kill.
        self._finished = True
        self._terminate_run(run_id)

    def _terminate_run(self, run_id: str) -> None:
        try:
            data = self.client.execute(TERMINATE_MUTATION, {"runId": run_id}, deadline=self._clock() + 30.0)
        except (DagsterProxyError, RuntimeError) as exc:  # RuntimeError: the client was closed already
            self.log.error("Could not terminate Dagster run %s (%s): %s", run_id, self.run_url(run_id), exc)
            return
        result = data["terminateRun"]
        if result.get("__typename") == "TerminateRunSuccess":
            self.log.info("Terminated Dagster run %s: %s", run_id, self.run_url(run_id))
        else:
            self.log.error(
                "Dagster did not terminate run %s: %s: %s",
                run_id,
                result.get("__typename"),
                result.get("message", ""),
            )
