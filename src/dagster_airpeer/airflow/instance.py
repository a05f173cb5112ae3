"""`AirflowInstance`: what airpeer asks a running Airflow 2 or 3, through its REST API.

The API version is detected once (REST v2 means Airflow 3, REST v1 Airflow 2), or given as `api_version=`;
every method then speaks that version and returns the same records (`models.py`) either way.
"""

from __future__ import annotations

import contextvars
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx

from . import _parse as p
from ._http import HttpSession, Result
from ._http import deadline as _deadline_block
from .auth import AirflowAuthBackend
from .errors import (
    AirflowAuthError,
    AirflowConfigError,
    AirflowConnectionError,
    AirflowError,
    AirflowResponseError,
    AirflowTimeoutError,
    AirflowVersionError,
)
from .models import (
    TERMINAL_RUN_STATES,
    TERMINAL_TASK_STATES,
    Dag,
    DagRun,
    DagVersionsPage,
    RunsPage,
    Task,
    TaskInstance,
    TaskInstancesPage,
)

__all__ = ["AirflowInstance"]

_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")

R = TypeVar("R")

#: Every 4xx is handed back to the version detection instead of raising: "not this version" is an answer.
_ANY_4XX = range(400, 500)
#: ...except a refusal, which may come from an auth proxy in front of Airflow: the probe is then asked again
#: with credentials.
_REFUSED = (401, 403)
_API_VERSIONS = ("v2", "v1")


#: Airflow 2's batch task-instance listing takes at most this many DAG ids before airpeer uses its GET listing.
V1_MAX_DAG_FILTER = 100


def _q(segment: str) -> str:
    """One URL path segment: DAG and run ids may hold `/`, spaces, `+`, `:` or non-ASCII letters."""
    return quote(segment, safe="")


def _iso(value: datetime, setting: str) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise AirflowConfigError(
            f"`{setting}` must be a timezone-aware datetime (Airflow rejects naive ones), got {value!r}."
        )
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _new_run_id() -> str:
    # Made here, not by Airflow, so that a POST retried after a lost answer finds its own run (409) instead
    # of starting a second one. Only characters that Airflow's default allowed_run_id_pattern accepts.
    now = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"airpeer__{now}_{secrets.token_hex(4)}"


class AirflowInstance:
    """A running Airflow 2.x or 3.x, reached through its REST API.

    Args:
        auth_backend: how to authenticate; its `webserver_url` is the instance's base URL.
        name: a name for this instance, used in asset keys and messages; letters, digits and `_` only.
        timeout: read timeout of one request, in seconds (connecting times out after 5 s).
        max_retries: retries after the first attempt, for connection failures, timeouts, 5xx and 429.
        verify: verify TLS certificates (default), or the path of a CA bundle to verify them with.
        page_size: items asked per page when listing; the server may return fewer.
        api_version: `"v2"` (Airflow 3) or `"v1"` (Airflow 2) to skip detecting it; None (default) detects it
            from the health endpoints on first use, asking again with credentials if they are refused (an
            auth proxy in front of Airflow).
        transport: an httpx transport to use instead of the network (tests, benchmarks).

    Thread-safe: one instance may serve concurrent calls. Close it (or use it as a context manager) to
    release its connections.
    """

    def __init__(
        self,
        auth_backend: AirflowAuthBackend,
        name: str,
        *,
        timeout: float = 10.0,
        max_retries: int = 3,
        verify: bool | str = True,
        page_size: int = 100,
        api_version: Literal["v1", "v2"] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not isinstance(auth_backend, AirflowAuthBackend):
            raise AirflowConfigError(
                "`auth_backend` must be an AirflowAuthBackend such as AirflowBasicAuthBackend(webserver_url, "
                f"username, password), got {type(auth_backend).__name__}."
            )
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise AirflowConfigError(
                f"`name` must be a valid Dagster name (letters, digits and underscores only, e.g. "
                f"'my_airflow'), got {name!r}."
            )
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise AirflowConfigError(f"`timeout` must be a number of seconds > 0, got {timeout!r}.")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise AirflowConfigError(f"`max_retries` must be an integer >= 0, got {max_retries!r}.")
        if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
            raise AirflowConfigError(f"`page_size` must be an integer >= 1, got {page_size!r}.")
        if not isinstance(verify, (bool, str)):
            raise AirflowConfigError(
                f"`verify` must be True, False or the path of a CA bundle, got {type(verify).__name__}."
            )
        if api_version is not None and (not isinstance(api_version, str) or api_version not in _API_VERSIONS):
            raise AirflowConfigError(
                f"`api_version` must be 'v2' (Airflow 3), 'v1' (Airflow 2) or None to detect it, got {api_version!r}."
            )
        self.auth_backend = auth_backend
        self.name = name
        self.webserver_url = auth_backend.webserver_url
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.page_size = page_size
        self._http = HttpSession(
            name=name,
            base_url=self.webserver_url,
            auth=auth_backend,
            timeout=self.timeout,
            max_retries=max_retries,
            verify=verify,
            transport=transport,
        )
        self._detect_lock = threading.Lock()
        # Once known (given, detected or taken from a stored snapshot) it is kept: an outage must not send
        # later calls back to detection, whose errors would name Airflow 3's health endpoint.
        self._api_version: Literal["v1", "v2"] | None = api_version
        #: The `api_version=` given (None: detected), for `airpeer doctor` to report.
        self.api_version_override: Literal["v1", "v2"] | None = api_version
        self._airflow_version: str | None = None
        # Between polls of wait_for_dag_run; replaceable in tests.
        self._poll_sleep: Callable[[float], None] = time.sleep

    def __repr__(self) -> str:
        return f"AirflowInstance(name={self.name!r}, auth_backend={self.auth_backend!r})"

    # -- lifecycle ------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Release pooled connections. The instance stays usable (a new pool is opened on demand)."""
        self._http.close()

    def __enter__(self) -> AirflowInstance:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- version --------------------------------------------------------------------------------------------

    @property
    def api_version(self) -> Literal["v1", "v2"]:
        """`"v2"` for Airflow 3, `"v1"` for Airflow 2: the `api_version` given, else detected on first use from
        the health endpoints (and kept from then on)."""
        version = self._api_version
        if version is not None:
            return version
        with self._detect_lock:
            if self._api_version is None:
                self._api_version = self._detect_api_version()
            return self._api_version

    def use_api_version(self, version: str) -> None:
        """Speak `version` ("v1" or "v2") from now on without detecting it, unless a version is known already.

        Loading definitions from the stored snapshot while Airflow is down calls this with the snapshot's
        version, so that the sensor's ticks during the outage ask (and name in their errors) the endpoints
        of that version instead of probing Airflow 3's health endpoint again on every tick.
        """
        if version not in _API_VERSIONS:
            raise AirflowConfigError(f"`version` must be 'v2' or 'v1', got {version!r}.")
        with self._detect_lock:
            if self._api_version is None:
                self._api_version = "v2" if version == "v2" else "v1"

    def _probe_health(self, path: str) -> tuple[bool, str, bool]:
        """(whether `path` is Airflow's health answer, what it gave, whether credentials were refused)."""

        def parse(response: httpx.Response) -> dict[str, Any] | None:
            try:
                body = response.json()
            except ValueError:
                return None
            return body if isinstance(body, dict) else None

        def ask(authenticate: bool) -> Result[dict[str, Any] | None]:
            return self._http.call(
                "GET", path, what="the health endpoint", parse=parse, passthrough=_ANY_4XX,
                authenticate=authenticate,
            )  # fmt: skip

        # Without credentials first: Airflow serves health to anyone, and a login costs a password check.
        result = ask(authenticate=False)
        status = result.response.status_code
        asked_as = ""
        if status in _REFUSED:
            # Something in front of Airflow (an auth proxy) wants credentials: ask again as airpeer's user.
            try:
                result = ask(authenticate=True)
            except AirflowAuthError as exc:
                return False, f"HTTP {status}, and with credentials a refusal ({exc})", True
            status = result.response.status_code
            asked_as = " with credentials"
            if status in _REFUSED:
                return False, f"HTTP {status} without and with credentials", True
        if status != 200:
            return False, f"HTTP {status}{asked_as}", False
        if result.value is None or "metadatabase" not in result.value:
            kind = result.response.headers.get("content-type", "unknown content")
            return False, f"HTTP 200{asked_as} but not Airflow's health answer ({kind})", False
        return True, f"HTTP 200{asked_as}", False

    def _detect_api_version(self) -> Literal["v1", "v2"]:
        try:
            v2, v2_found, v2_refused = self._probe_health("/api/v2/monitor/health")
            if v2:
                return "v2"
            v1, v1_found, v1_refused = self._probe_health("/api/v1/health")
            if v1:
                return "v1"
        except AirflowConnectionError as exc:
            # Name what this request was: asked first whatever the version, so on an Airflow 2 the message
            # would otherwise read as if airpeer took it for an Airflow 3.
            raise AirflowConnectionError(
                f"{exc} (That request was the detection of the Airflow version, which asks Airflow 3's health "
                "endpoint first and then Airflow 2's; set `api_version=` on AirflowInstance to skip it.)"
            ) from None
        found = f"GET /api/v2/monitor/health gave {v2_found} and GET /api/v1/health gave {v1_found}"
        if v2_refused or v1_refused:
            # A configuration error, not an outage: never a reason to serve definitions from a stale snapshot.
            raise AirflowAuthError(
                f"{self.webserver_url} (Airflow instance {self.name!r}) refused the credentials of "
                f"{self.auth_backend.describe_principal()} while airpeer detected the Airflow version: {found}. "
                "Check the credentials given to the auth backend (and that a proxy in front of Airflow accepts "
                "them), or set `api_version=` ('v2' for Airflow 3, 'v1' for Airflow 2) on AirflowInstance."
            )
        raise AirflowVersionError(
            f"{self.webserver_url} (Airflow instance {self.name!r}) does not look like Airflow 3 or 2: {found}. "
            "Check `webserver_url`: it must be the base URL of the Airflow API server (3.x) or webserver (2.x). "
            "If something in front of Airflow hides its health endpoints, set `api_version=` ('v2' for "
            "Airflow 3, 'v1' for Airflow 2) on AirflowInstance."
        )

    @property
    def airflow_version(self) -> str:
        """Airflow's version string, such as "3.3.2" (asked once)."""
        if self._airflow_version is None:
            v = self.api_version
            result = self._http.call(
                "GET", f"/api/{v}/version", what="the version", parse=p.parser(p.VersionWire, "GET /version")
            )
            self._airflow_version = result.value.version
        return self._airflow_version

    def open_session(self) -> None:
        """Log in now if the auth backend keeps a session (Airflow 2's login-form cookie, once basic auth has
        worked), so that the next call does not pay for the login. Definitions call this after loading, so
        the sensor's first tick starts logged in. A failed login is not an error: calls use basic auth."""
        if self.api_version != "v1":
            return  # Airflow 3's token is fetched by the first call and lasts; nothing to prepare

        def send(request: httpx.Request) -> httpx.Response:
            return self._http.client().send(request)

        self.auth_backend.open_session(send, self.timeout)

    # -- clock and deadlines --------------------------------------------------------------------------------

    def server_time(self) -> datetime | None:
        """Airflow's clock now, estimated from the last answer's `Date` header (1 s resolution) plus the
        time elapsed since; None before the first answer."""
        return self._http.server_time()

    @contextmanager
    def deadline(self, seconds: float) -> Iterator[None]:
        """Within this block no request or retry starts after `seconds` from now, and request timeouts are
        clipped to the time left; then calls fail with AirflowConnectionError ("... time budget ...").

        The limit is held in a context variable: it applies to this thread (or task) only, nested blocks
        keep the earliest limit.
        """
        with _deadline_block(seconds):
            yield

    # -- paging ---------------------------------------------------------------------------------------------

    def _collect(
        self,
        fetch: Callable[[int, int], tuple[list[R], int | None]],
        key: Callable[[R], Hashable],
        progress: Callable[[int, int], None] | None = None,
    ) -> list[R]:
        """Every item of an offset-paged listing, without missing or repeating one that stays listed.

        Pages overlap by one item. When a page does not start with an item already seen, items before our
        position disappeared between two pages and the listing shifted left: we step back a page rather
        than skip what slid into the gap. Items that appear twice (the listing shifted right) are counted
        once.
        """
        limit = max(2, self.page_size)
        seen: dict[Hashable, R] = {}
        offset = 0
        page_length = limit  # what the server really returns per page (it may cap `limit`)
        requests = 0
        budget: int | None = None
        while True:
            items, total = fetch(offset, limit)
            requests += 1
            if total is None:
                total = offset + len(items) + (1 if len(items) >= page_length else 0)
            if offset == 0 and items:
                page_length = max(2, min(limit, len(items)))
            if budget is None:
                # Generous: each page once, plus a step back for every page, plus slack.
                budget = 10 + 3 * (total // page_length + 1)
            elif requests > budget:
                raise AirflowResponseError(
                    f"The listing of Airflow instance {self.name!r} kept changing while it was read "
                    f"({requests} pages); try again."
                )
            if offset > 0 and (not items or key(items[0]) not in seen):
                offset = max(0, offset - page_length)
                continue
            for item in items:
                seen.setdefault(key(item), item)
            if progress is not None:
                progress(len(seen), max(total, len(seen)))
            end = offset + len(items)
            if not items or end >= total:
                return list(seen.values())
            offset = end - 1 if len(items) > 1 else end

    # -- DAGs -----------------------------------------------------------------------------------------------

    def _dags_page(self, params: dict[str, Any]) -> Callable[[int, int], tuple[list[Dag], int | None]]:
        v = self.api_version
        endpoint = f"GET /api/{v}/dags"

        def fetch(offset: int, limit: int) -> tuple[list[Dag], int | None]:
            query = {**params, "limit": limit, "offset": offset}
            if v == "v2":
                r2 = self._http.call(
                    "GET",
                    "/api/v2/dags",
                    what="the DAG list",
                    params=query,
                    parse=p.parser(p.DagsV2, endpoint),
                )
                return [p.dag_from_v2(d) for d in r2.value.dags], r2.value.total_entries
            r1 = self._http.call(
                "GET", "/api/v1/dags", what="the DAG list", params=query, parse=p.parser(p.DagsV1, endpoint)
            )
            return [p.dag_from_v1(d) for d in r1.value.dags], r1.value.total_entries

        return fetch

    def list_dags(
        self,
        *,
        dag_id_pattern: str | None = None,
        tags: Sequence[str] | None = None,
        include_inactive: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[Dag]:
        """All DAGs, ordered by dag_id, filtered by Airflow itself.

        Args:
            dag_id_pattern: keep DAGs whose id contains this text (case-insensitive; `|` separates
                alternatives on Airflow 3).
            tags: keep DAGs having any of these tags.
            include_inactive: also list DAGs whose file is gone (v1 `is_active` false, v2 `is_stale`).
            progress: called after each page with (DAGs so far, total announced by Airflow).
        """
        if isinstance(tags, str):
            raise AirflowConfigError("`tags` must be a list of tag names, not a single string.")
        params: dict[str, Any] = {"order_by": "dag_id"}
        if self.api_version == "v2":
            params["exclude_stale"] = "false" if include_inactive else "true"
        else:
            params["only_active"] = "false" if include_inactive else "true"
        if dag_id_pattern:
            params["dag_id_pattern"] = dag_id_pattern
        if tags:
            params["tags"] = list(tags)
        dags = self._collect(self._dags_page(params), key=lambda d: d.dag_id, progress=progress)
        dags.sort(key=lambda d: d.dag_id)
        return dags

    def get_dag(self, dag_id: str) -> Dag:
        """One DAG; AirflowNotFoundError if Airflow does not know it."""
        v = self.api_version
        endpoint = f"GET /api/{v}/dags/{{dag_id}}"
        what = f"DAG {dag_id!r}"
        if v == "v2":
            r2 = self._http.call(
                "GET", f"/api/v2/dags/{_q(dag_id)}", what=what, parse=p.parser(p.DagV2, endpoint)
            )
            return p.dag_from_v2(r2.value)
        r1 = self._http.call(
            "GET", f"/api/v1/dags/{_q(dag_id)}", what=what, parse=p.parser(p.DagV1, endpoint)
        )
        return p.dag_from_v1(r1.value)

    def list_tasks(self, dag_id: str) -> list[Task]:
        """The tasks of a DAG."""
        v = self.api_version
        result = self._http.call(
            "GET",
            f"/api/{v}/dags/{_q(dag_id)}/tasks",
            what=f"DAG {dag_id!r}",
            parse=p.parser(p.TasksWire, f"GET /api/{v}/dags/{{dag_id}}/tasks"),
        )
        return [p.task_from_wire(dag_id, t) for t in result.value.tasks]

    def set_paused(self, dag_id: str, paused: bool) -> Dag:
        """Pause or unpause a DAG; returns the DAG as Airflow now reports it."""
        v = self.api_version
        endpoint = f"PATCH /api/{v}/dags/{{dag_id}}"
        path = f"/api/{v}/dags/{_q(dag_id)}"
        what = f"DAG {dag_id!r}"
        body = {"is_paused": bool(paused)}
        params = {"update_mask": "is_paused"}
        if v == "v2":
            r2 = self._http.call(
                "PATCH", path, what=what, params=params, json_body=body, parse=p.parser(p.DagV2, endpoint)
            )
            return p.dag_from_v2(r2.value)
        r1 = self._http.call(
            "PATCH", path, what=what, params=params, json_body=body, parse=p.parser(p.DagV1, endpoint)
        )
        return p.dag_from_v1(r1.value)

    # -- sources --------------------------------------------------------------------------------------------

    def get_dag_source(self, dag: Dag) -> str:
        """The source code of the file defining a DAG."""
        v = self.api_version
        if v == "v2":
            path = f"/api/v2/dagSources/{_q(dag.dag_id)}"
        else:
            token = dag.file_token or self.get_dag(dag.dag_id).file_token
            if not token:
                raise AirflowResponseError(
                    f"Airflow instance {self.name!r} gave no file_token for DAG {dag.dag_id!r}; cannot fetch "
                    "its source."
                )
            path = f"/api/v1/dagSources/{_q(token)}"
        result = self._http.call(
            "GET",
            path,
            what=f"the source of DAG {dag.dag_id!r}",
            parse=p.parser(p.SourceWire, f"GET /api/{v}/dagSources"),
            headers={"Accept": "application/json"},
        )
        return result.value.content or ""

    def get_dag_sources(self, dags: Sequence[Dag], max_workers: int = 8) -> dict[str, str]:
        """The sources of several DAGs, fetched concurrently over the pooled connections: {dag_id: source}."""
        if not dags:
            return {}
        self.api_version  # noqa: B018 - detect once here rather than racing in the workers
        workers = max(1, min(max_workers, len(dags)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="airpeer-sources") as pool:
            # Each task runs in a copy of our context so that a deadline() around this call holds there too.
            futures = [
                (dag.dag_id, pool.submit(contextvars.copy_context().run, self.get_dag_source, dag))
                for dag in dags
            ]
            return {dag_id: future.result() for dag_id, future in futures}

    # -- DAG runs -------------------------------------------------------------------------------------------

    def _run_parser(self, endpoint: str) -> Callable[[httpx.Response], p.DagRunWire]:
        return p.parser(p.DagRunWire, endpoint)

    def trigger_dag_run(
        self,
        dag_id: str,
        *,
        run_id: str | None = None,
        conf: Mapping[str, Any] | None = None,
        logical_date: datetime | None = None,
    ) -> DagRun:
        """Start a run of a DAG (a manual run, as from the UI) and return it.

        The run id is chosen here when not given, so that retrying a POST whose answer was lost is safe: the
        retry finds the run already created (409) and returns it.
        """
        v = self.api_version
        run_id = run_id or _new_run_id()
        conf_dict = dict(conf or {})
        try:
            json.dumps(conf_dict)
        except (TypeError, ValueError) as exc:
            raise AirflowConfigError(f"`conf` must be JSON-serialisable: {exc}") from None
        body: dict[str, Any] = {"dag_run_id": run_id, "conf": conf_dict}
        if logical_date is not None:
            body["logical_date"] = _iso(logical_date, "logical_date")
        elif v == "v2":
            # Airflow 3 requires the key; null means a run without a logical date.
            body["logical_date"] = None
        result: Result[p.DagRunWire] = self._http.call(
            "POST",
            f"/api/{v}/dags/{_q(dag_id)}/dagRuns",
            what=f"DAG {dag_id!r}",
            json_body=body,
            ok=(200, 201),
            passthrough=(409,),
            parse=self._run_parser(f"POST /api/{v}/dags/{{dag_id}}/dagRuns"),
        )
        if result.response.status_code == 409:
            if result.attempts > 1:
                return self.get_dag_run(dag_id, run_id)
            raise AirflowError(
                f"DAG {dag_id!r} of Airflow instance {self.name!r} already has a run with id {run_id!r} "
                "(or with this logical date)."
            )
        return p.run_from_wire(result.value)

    def get_dag_run(self, dag_id: str, run_id: str) -> DagRun:
        """One DAG run; AirflowNotFoundError if it does not exist."""
        v = self.api_version
        result = self._http.call(
            "GET",
            f"/api/{v}/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}",
            what=f"run {run_id!r} of DAG {dag_id!r}",
            parse=self._run_parser(f"GET /api/{v}/dags/{{dag_id}}/dagRuns/{{run_id}}"),
        )
        return p.run_from_wire(result.value)

    def wait_for_dag_run(
        self, dag_id: str, run_id: str, *, timeout: float = 300, poll_interval: float = 1.0
    ) -> DagRun:
        """Poll a run until it ends (success or failed) and return it; AirflowTimeoutError after `timeout`."""
        end = time.monotonic() + timeout
        while True:
            run = self.get_dag_run(dag_id, run_id)
            if run.state in TERMINAL_RUN_STATES:
                return run
            left = end - time.monotonic()
            if left <= 0:
                raise AirflowTimeoutError(
                    f"Run {run_id!r} of DAG {dag_id!r} on Airflow instance {self.name!r} did not finish "
                    f"within {timeout:g} s (last state: {run.state!r})."
                )
            self._poll_sleep(min(poll_interval, left))

    def delete_dag_run(self, dag_id: str, run_id: str) -> None:
        """Delete a DAG run (and its task instances) from Airflow."""
        v = self.api_version
        self._http.call(
            "DELETE",
            f"/api/{v}/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}",
            what=f"run {run_id!r} of DAG {dag_id!r}",
            ok=(200, 204),
            parse=lambda response: None,
        )

    def set_dag_run_state(self, dag_id: str, run_id: str, state: Literal["success", "failed"]) -> DagRun:
        """Mark a DAG run as succeeded or failed (as the UI's "Mark as" does; running tasks are stopped)."""
        v = self.api_version
        endpoint = f"PATCH /api/{v}/dags/{{dag_id}}/dagRuns/{{dag_run_id}}"
        result = self._http.call(
            "PATCH",
            f"/api/{v}/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}",
            what=f"run {run_id!r} of DAG {dag_id!r}",
            json_body={"state": state},
            parse=p.parser(p.DagRunWire, endpoint),
        )
        return p.run_from_wire(result.value)

    def list_dag_runs(
        self, dag_id: str | None = None, *, states: Sequence[str] | None = None
    ) -> list[DagRun]:
        """All runs of one DAG (or of every DAG), oldest first, optionally only in some states."""
        if isinstance(states, str):
            raise AirflowConfigError("`states` must be a list of states, not a single string.")
        v = self.api_version
        path = f"/api/{v}/dags/{_q(dag_id) if dag_id is not None else '~'}/dagRuns"
        endpoint = f"GET /api/{v}/dags/{{dag_id}}/dagRuns"
        params: dict[str, Any] = {"order_by": "id"}
        if states:
            params["state"] = list(states)

        def fetch(offset: int, limit: int) -> tuple[list[DagRun], int | None]:
            result = self._http.call(
                "GET",
                path,
                what=f"the runs of DAG {dag_id!r}" if dag_id is not None else "the DAG runs",
                params={**params, "limit": limit, "offset": offset},
                parse=p.parser(p.DagRunsWire, endpoint),
            )
            return [p.run_from_wire(r) for r in result.value.dag_runs], result.value.total_entries

        return self._collect(fetch, key=lambda r: (r.dag_id, r.run_id))

    def list_finished_runs(
        self,
        *,
        end_date_gte: datetime,
        end_date_lte: datetime | None = None,
        order_by: Literal["end_date", "-end_date", "id"] = "end_date",
        offset: int = 0,
        limit: int | None = None,
        dag_ids: Sequence[str] | None = None,
    ) -> RunsPage:
        """One page of finished (success or failed) runs that ended in [end_date_gte, end_date_lte].

        Exactly one request (`POST /api/{v}/dags/~/dagRuns/list`); the caller pages. Airflow 2 sorts by
        `order_by` alone (no tiebreaker), Airflow 3 adds the primary key; `order_by="id"` gives a stable
        order among runs sharing one end_date. The server may return fewer than `limit` items
        (`api.maximum_page_limit`). `server_time` is the server's clock when it answered.
        """
        if order_by not in ("end_date", "-end_date", "id"):
            raise AirflowConfigError(f"`order_by` must be 'end_date', '-end_date' or 'id', got {order_by!r}.")
        body = self._finished_body(end_date_gte, end_date_lte, dag_ids, offset, limit)
        if body is None:
            return RunsPage(runs=(), total_entries=0, server_time=self.server_time())
        body.update(states=list(TERMINAL_RUN_STATES), order_by=order_by)
        v = self.api_version
        result = self._http.call(
            "POST",
            f"/api/{v}/dags/~/dagRuns/list",
            what="the finished DAG runs",
            json_body=body,
            parse=p.parser(p.DagRunsWire, f"POST /api/{v}/dags/~/dagRuns/list"),
        )
        return RunsPage.model_construct(
            runs=tuple(p.run_from_wire(r) for r in result.value.dag_runs),
            total_entries=result.value.total_entries,
            server_time=self._http.date_of(result.response),
        )

    def _finished_body(
        self,
        end_date_gte: datetime,
        end_date_lte: datetime | None,
        dag_ids: Sequence[str] | None,
        offset: int,
        limit: int | None,
    ) -> dict[str, Any] | None:
        """The request body both listings of finished runs and task instances share; None when `dag_ids` is
        empty (Airflow reads an empty list as "every DAG"; we mean none, so no request is sent)."""
        page_limit = self._page_limit(offset, limit)
        if isinstance(dag_ids, str):
            raise AirflowConfigError("`dag_ids` must be a list of DAG ids, not a single string.")
        body: dict[str, Any] = {
            "end_date_gte": _iso(end_date_gte, "end_date_gte"),
            "page_offset": offset,
            "page_limit": page_limit,
        }
        if end_date_lte is not None:
            body["end_date_lte"] = _iso(end_date_lte, "end_date_lte")
        if dag_ids is not None:
            if not dag_ids:
                return None
            body["dag_ids"] = list(dag_ids)
        return body

    def _page_limit(self, offset: int, limit: int | None) -> int:
        """Check the paging arguments of a one-page call; returns the page size to ask for."""
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise AirflowConfigError(f"`offset` must be an integer >= 0, got {offset!r}.")
        page_limit = self.page_size if limit is None else limit
        if isinstance(page_limit, bool) or not isinstance(page_limit, int) or page_limit < 1:
            raise AirflowConfigError(f"`limit` must be an integer >= 1, got {limit!r}.")
        return page_limit

    def list_dag_versions(self, *, offset: int = 0, limit: int | None = None) -> DagVersionsPage:
        """One page of the versions of all DAGs, newest first (`GET /api/v2/dags/~/dagVersions`, Airflow 3).

        Exactly one request; the caller pages. Version ids are UUIDv7, so "newest first" is `order_by=-id`.
        Airflow 2 has no DAG versions: AirflowVersionError.
        """
        page_limit = self._page_limit(offset, limit)
        if self.api_version != "v2":
            raise AirflowVersionError(
                f"Airflow instance {self.name!r} ({self.webserver_url}) is Airflow 2, which has no DAG versions; "
                "list_dag_versions() needs Airflow 3."
            )
        endpoint = "GET /api/v2/dags/~/dagVersions"
        result = self._http.call(
            "GET",
            "/api/v2/dags/~/dagVersions",
            what="the DAG versions",
            params={"order_by": "-id", "limit": page_limit, "offset": offset},
            parse=p.parser(p.DagVersionsWire, endpoint),
        )
        return DagVersionsPage.model_construct(
            versions=tuple(p.version_from_wire(v) for v in result.value.dag_versions),
            total_entries=result.value.total_entries,
        )

    def _task_instance_listing(self, path: str, endpoint: str, what: str) -> list[TaskInstance]:
        """Every task instance of a GET listing of task instances (pages overlap, see `_collect`)."""

        def fetch(offset: int, limit: int) -> tuple[list[TaskInstance], int | None]:
            result = self._http.call(
                "GET",
                path,
                what=what,
                params={"limit": limit, "offset": offset},
                parse=p.parser(p.TaskInstancesWire, endpoint),
            )
            return (
                [p.task_instance_from_wire(t) for t in result.value.task_instances],
                result.value.total_entries,
            )

        return self._collect(fetch, key=lambda t: (t.task_id, t.map_index))

    def list_task_instances(self, dag_id: str, run_id: str) -> list[TaskInstance]:
        """The task instances of one DAG run."""
        v = self.api_version
        return self._task_instance_listing(
            f"/api/{v}/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances",
            f"GET /api/{v}/dags/{{dag_id}}/dagRuns/{{run_id}}/taskInstances",
            f"run {run_id!r} of DAG {dag_id!r}",
        )

    def list_finished_task_instances(
        self,
        *,
        end_date_gte: datetime,
        end_date_lte: datetime | None = None,
        dag_ids: Sequence[str] | None = None,
        offset: int = 0,
        limit: int | None = None,
        order_by: Literal["id", "end_date"] | None = None,
    ) -> TaskInstancesPage:
        """One page of task instances that ended (success or failed) in [end_date_gte, end_date_lte].

        Exactly one request (`POST /api/{v}/dags/~/dagRuns/~/taskInstances/list`; on Airflow 2 without `dag_ids`
        or with more than `V1_MAX_DAG_FILTER` of them, `GET /api/v1/dags/~/dagRuns/~/taskInstances`, which lists
        every DAG's); the caller pages. Airflow 2
        applies no order to this listing (its batch endpoint has no `order_by`), so pages of a result larger
        than one page may overlap or miss rows: the task feed reads ranges that fit one page (feed/tasks.py).
        `order_by` is sent to Airflow 3 only. A failed try that Airflow will retry is `up_for_retry`, so it is
        not listed; the try that ends the task instance is.
        """
        body = self._finished_body(end_date_gte, end_date_lte, dag_ids, offset, limit)
        if body is None:
            return TaskInstancesPage(task_instances=(), total_entries=0, server_time=self.server_time())
        body["state"] = list(TERMINAL_TASK_STATES)
        v = self.api_version
        if order_by is not None and v == "v2":
            body["order_by"] = order_by
        if v == "v1" and ("dag_ids" not in body or len(body["dag_ids"]) > V1_MAX_DAG_FILTER):
            # Airflow 2 turns a list of DAG ids (given, or every DAG the login may read when none is) into one
            # OR term per DAG in its batch endpoint, which SQLite refuses past ~1000 and any database plans
            # slowly. Its GET listing filters the readable DAGs with IN instead; it takes no list of DAG ids,
            # so many DAGs are read unfiltered (the sensor ignores task instances of unmapped DAGs).
            params: dict[str, Any] = {
                "end_date_gte": body["end_date_gte"],
                "state": body["state"],
                "limit": body["page_limit"],
                "offset": body["page_offset"],
            }
            if "end_date_lte" in body:
                params["end_date_lte"] = body["end_date_lte"]
            endpoint = "GET /api/v1/dags/~/dagRuns/~/taskInstances"
            result = self._http.call(
                "GET",
                "/api/v1/dags/~/dagRuns/~/taskInstances",
                what="the finished task instances",
                params=params,
                parse=p.parser(p.TaskInstancesWire, endpoint),
            )
        else:
            endpoint = f"POST /api/{v}/dags/~/dagRuns/~/taskInstances/list"
            result = self._http.call(
                "POST",
                f"/api/{v}/dags/~/dagRuns/~/taskInstances/list",
                what="the finished task instances",
                json_body=body,
                parse=p.parser(p.TaskInstancesWire, endpoint),
            )
        return TaskInstancesPage.model_construct(
            task_instances=tuple(p.task_instance_from_wire(t) for t in result.value.task_instances),
            total_entries=(
                result.value.total_entries
                if result.value.total_entries is not None
                else offset + len(result.value.task_instances)
            ),
            server_time=self._http.date_of(result.response),
        )

    def list_mapped_task_instances(self, dag_id: str, run_id: str, task_id: str) -> list[TaskInstance]:
        """Every map index of one dynamically mapped (`.expand`) task in one DAG run, by map index."""
        v = self.api_version
        # Airflow 2.11 refuses `order_by=map_index` on this listing (HTTP 400): sorted here instead.
        found = self._task_instance_listing(
            f"/api/{v}/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/listMapped",
            f"GET /api/{v}/dags/{{dag_id}}/dagRuns/{{run_id}}/taskInstances/{{task_id}}/listMapped",
            f"the map indexes of task {task_id!r} in run {run_id!r} of DAG {dag_id!r}",
        )
        return sorted(found, key=lambda t: t.map_index)

    # -- UI links -------------------------------------------------------------------------------------------

    def dag_url(self, dag_id: str) -> str:
        """The page of a DAG in Airflow's UI."""
        if self.api_version == "v2":
            return f"{self.webserver_url}/dags/{_q(dag_id)}"
        return f"{self.webserver_url}/dags/{_q(dag_id)}/grid"

    def run_url(self, dag_id: str, run_id: str) -> str:
        """The page of a DAG run in Airflow's UI."""
        if self.api_version == "v2":
            return f"{self.webserver_url}/dags/{_q(dag_id)}/runs/{_q(run_id)}"
        return f"{self.webserver_url}/dags/{_q(dag_id)}/grid?dag_run_id={_q(run_id)}"
