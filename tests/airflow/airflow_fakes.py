"""A scriptable stand-in for Airflow's REST API, for cases a real Airflow cannot produce on demand
(5xx, 429, cut answers, listings that change between pages, expiring tokens).

Samples follow the shapes served by Airflow 2.11 (REST v1) and 3.3 (REST v2).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any
from urllib.parse import unquote

import httpx

from dagster_airpeer.airflow import AirflowBasicAuthBackend, AirflowInstance

URL = "http://airflow.test:8080"
LOCAL_URL = "http://127.0.0.1:8793"

Handler = Callable[[httpx.Request], httpx.Response]


def make_jwt(exp: float | None, sub: str = "admin") -> str:
    def b64(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    claims: dict[str, Any] = {"sub": sub, "iat": int(time.time())}
    if exp is not None:
        claims["exp"] = int(exp)
    return f"{b64({'alg': 'HS512', 'typ': 'JWT'})}.{b64(claims)}.c2lnbmF0dXJl"


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    all_headers = {
        "date": format_datetime(datetime(2025, 11, 25, 10, 0, 0, tzinfo=timezone.utc), usegmt=True)
    }
    all_headers.update(headers or {})
    return httpx.Response(status, json=body, headers=all_headers)


HEALTH_V2 = {
    "metadatabase": {"status": "healthy"},
    "scheduler": {"status": "healthy", "latest_scheduler_heartbeat": "2025-11-25T10:00:00+00:00"},
    "triggerer": {"status": None, "latest_triggerer_heartbeat": None},
    "dag_processor": {"status": "healthy", "latest_dag_processor_heartbeat": "2025-11-25T10:00:00+00:00"},
}
HEALTH_V1 = {
    "metadatabase": {"status": "healthy"},
    "scheduler": {"status": "healthy", "latest_scheduler_heartbeat": "2025-11-25T10:00:00.000000+00:00"},
    "triggerer": {"status": None, "latest_triggerer_heartbeat": None},
    "dag_processor": {"status": None, "latest_dag_processor_heartbeat": None},
}


def dag_v2(dag_id: str, **over: Any) -> dict[str, Any]:
    """A DAG as Airflow 3.3 lists it (DAGResponse)."""
    body: dict[str, Any] = {
        "dag_id": dag_id,
        "dag_display_name": dag_id,
        "is_paused": False,
        "is_stale": False,
        "last_parsed_time": "2025-11-25T09:58:01.123456Z",
        "last_parse_duration": 0.12,
        "last_expired": None,
        "bundle_name": "dags-folder",
        "bundle_version": None,
        "relative_fileloc": f"{dag_id}.py",
        "fileloc": f"/opt/airflow/dags/{dag_id}.py",
        "description": None,
        "timetable_summary": None,
        "timetable_description": "Never, external triggers only",
        "timetable_partitioned": False,
        "timetable_periodic": False,
        "tags": [{"name": "airpeer", "dag_id": dag_id}, {"name": "example", "dag_id": dag_id}],
        "max_active_tasks": 16,
        "max_active_runs": 16,
        "max_consecutive_failed_dag_runs": 0,
        "has_task_concurrency_limits": False,
        "has_import_errors": False,
        "next_dagrun_logical_date": None,
        "next_dagrun_data_interval_start": None,
        "next_dagrun_data_interval_end": None,
        "next_dagrun_run_after": None,
        "allowed_run_types": None,
        "owners": ["airflow"],
        "is_backfillable": False,
        "file_token": ".eJw1yTEKgCAUANC7_NnBSRePpb9",
    }
    body.update(over)
    return body


def dag_v1(dag_id: str, **over: Any) -> dict[str, Any]:
    """A DAG as Airflow 2.11 lists it (DAGSchema)."""
    body: dict[str, Any] = {
        "dag_id": dag_id,
        "dag_display_name": dag_id,
        "root_dag_id": None,
        "is_paused": False,
        "is_active": True,
        "is_subdag": False,
        "last_parsed_time": "2025-11-25T09:58:01.123456+00:00",
        "last_pickled": None,
        "last_expired": None,
        "scheduler_lock": None,
        "pickle_id": None,
        "default_view": "grid",
        "fileloc": f"/opt/airflow/dags/{dag_id}.py",
        "file_token": "Ii9vcHQvYWlyZmxvdy9kYWdzL2EucHki.abcdEFGH-ijkl_mnop",
        "owners": ["airflow"],
        "description": None,
        "schedule_interval": {"__type": "CronExpression", "value": "0 0 * * *"},
        "timetable_description": "At 00:00",
        "tags": [{"name": "example"}],
        "max_active_tasks": 16,
        "max_active_runs": 16,
        "max_consecutive_failed_dag_runs": 0,
        "has_task_concurrency_limits": False,
        "has_import_errors": False,
        "next_dagrun": None,
        "next_dagrun_data_interval_start": None,
        "next_dagrun_data_interval_end": None,
        "next_dagrun_create_after": None,
    }
    body.update(over)
    return body


def run_v2(dag_id: str, run_id: str, state: str = "success", **over: Any) -> dict[str, Any]:
    """A DAG run as Airflow 3.3 serves it (DAGRunResponse)."""
    body: dict[str, Any] = {
        "dag_run_id": run_id,
        "dag_id": dag_id,
        "logical_date": None,
        "queued_at": "2025-11-25T10:00:00.100000Z",
        "start_date": "2025-11-25T10:00:01.200000Z",
        "end_date": "2025-11-25T10:00:05.345678Z" if state in ("success", "failed") else None,
        "duration": 4.1,
        "data_interval_start": None,
        "data_interval_end": None,
        "run_after": "2025-11-25T10:00:00.000000Z",
        "last_scheduling_decision": "2025-11-25T10:00:05.300000Z",
        "run_type": "manual",
        "state": state,
        "triggered_by": "rest_api",
        "triggering_user_name": "admin",
        "conf": {},
        "note": None,
        "dag_versions": [],
        "bundle_version": None,
        "dag_display_name": dag_id,
        "partition_key": None,
        "partition_date": None,
    }
    body.update(over)
    return body


def run_v1(dag_id: str, run_id: str, state: str = "success", **over: Any) -> dict[str, Any]:
    """A DAG run as Airflow 2.11 serves it (DAGRunSchema)."""
    body: dict[str, Any] = {
        "dag_run_id": run_id,
        "dag_id": dag_id,
        "logical_date": "2025-11-25T10:00:00.000000+00:00",
        "execution_date": "2025-11-25T10:00:00.000000+00:00",
        "start_date": "2025-11-25T10:00:01.200000+00:00",
        "end_date": "2025-11-25T10:00:05.345678+00:00" if state in ("success", "failed") else None,
        "state": state,
        "external_trigger": True,
        "conf": {},
        "data_interval_start": "2025-11-25T10:00:00+00:00",
        "data_interval_end": "2025-11-25T10:00:00+00:00",
        "last_scheduling_decision": "2025-11-25T10:00:05.300000+00:00",
        "run_type": "manual",
        "note": None,
    }
    body.update(over)
    return body


class FakeAirflow:
    """Routes requests to handlers by (method, decoded path); records every request it sees.

    Speaks v2 (Airflow 3, JWT logins) or v1 (Airflow 2, basic auth) for the health checks and logins; each
    test adds the routes it needs.
    """

    def __init__(
        self,
        version: str = "v2",
        *,
        username: str = "admin",
        password: str = "s3cret-pw",  # noqa: S107 - a fake server's test password
        token_ttl: float = 3600.0,
        ui_login: bool = False,
    ) -> None:
        self.version = version
        self.username = username
        self.password = password
        self.token_ttl = token_ttl
        self.requests: list[httpx.Request] = []
        self.routes: dict[tuple[str, str], Handler] = {}
        self.logins = 0
        self.issued: list[str] = []
        self.valid_tokens: set[str] = set()
        self.lock = threading.Lock()
        #: v1 only: serve Airflow 2's login form and accept its session cookie on the API (what Airflow 2
        #: does with `airflow.api.auth.backend.session` in `[api] auth_backends`).
        self.sessions: set[str] = set()
        self.cookies_issued = 0
        self.form_logins = 0
        if ui_login:
            self.add("GET", "/login/", self._login_page)
            self.add("POST", "/login/", self._login_form)
        if version == "v2":
            self.add("GET", "/api/v2/monitor/health", lambda r: json_response(200, HEALTH_V2))
            self.add(
                "GET", "/api/v1/health", lambda r: json_response(404, {"detail": "removed in Airflow 3"})
            )
            self.add("POST", "/auth/token", self._login)
        elif version == "v1":
            self.add("GET", "/api/v2/monitor/health", lambda r: httpx.Response(404, text="Not Found"))
            self.add("GET", "/api/v1/health", lambda r: json_response(200, HEALTH_V1))

    # -- routing --------------------------------------------------------------------------------------------

    def add(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler

    def __call__(self, request: httpx.Request) -> httpx.Response:
        # A snapshot: auth flows re-send the same request object with other headers.
        snapshot = httpx.Request(
            request.method,
            request.url,
            headers=request.headers.copy(),
            content=request.read(),
            extensions=dict(request.extensions),
        )
        with self.lock:
            self.requests.append(snapshot)
        path = unquote(request.url.raw_path.split(b"?")[0].decode("ascii"))
        handler = self.routes.get((request.method, path))
        if handler is None:
            return json_response(404, {"detail": f"no route {request.method} {path}"})
        if path.startswith(("/api/v2/", "/api/v1/")) and not path.endswith("health"):
            refused = self._check_auth(request)
            if refused is not None:
                return refused
        return handler(request)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def api(self, method: str, suffix: str) -> list[httpx.Request]:
        """Requests seen for one route (suffix after /api/{v})."""
        want = f"/api/{self.version}{suffix}"
        return [
            r
            for r in self.requests
            if r.method == method and unquote(r.url.raw_path.split(b"?")[0].decode()) == want
        ]

    # -- auth -----------------------------------------------------------------------------------------------

    def _login(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        with self.lock:
            self.logins += 1
        if body.get("username") != self.username or body.get("password") != self.password:
            return json_response(401, {"detail": "Invalid credentials"})
        token = make_jwt(time.time() + self.token_ttl)
        # Make every token distinct even within one second.
        token = f"{token}{len(self.issued)}"
        with self.lock:
            self.issued.append(token)
            self.valid_tokens.add(token)
        return json_response(201, {"access_token": token})

    def _login_page(self, request: httpx.Request) -> httpx.Response:
        html = (
            '<form method="post"><input id="csrf_token" name="csrf_token" type="hidden" value="CSRF-1.x">'
            '<input name="username" type="text"><input name="password" type="password"></form>'
        )
        cookie = "session=pre-login; Expires=Fri, 25 Dec 2026 10:15:09 GMT; HttpOnly; Path=/; SameSite=Lax"
        return httpx.Response(200, text=html, headers={"set-cookie": cookie, "content-type": "text/html"})

    def _login_form(self, request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        with self.lock:
            self.form_logins += 1
        good = (
            form.get("csrf_token") == "CSRF-1.x"
            and request.headers.get("cookie") == "session=pre-login"
            and (form.get("username"), form.get("password")) == (self.username, self.password)
        )
        if not good:
            return httpx.Response(302, headers={"location": "/login/"})
        with self.lock:
            session = f"sess{self.cookies_issued}"
            self.cookies_issued += 1
            self.sessions.add(session)
        cookie = f"session={session}; Expires=Fri, 25 Dec 2026 10:15:09 GMT; HttpOnly; Path=/; SameSite=Lax"
        return httpx.Response(302, headers={"location": "/home", "set-cookie": cookie})

    def _check_auth(self, request: httpx.Request) -> httpx.Response | None:
        header = request.headers.get("authorization", "")
        if self.version == "v2":
            if not header:
                return json_response(401, {"detail": "Not authenticated"})
            if header.removeprefix("Bearer ") not in self.valid_tokens:
                return json_response(403, {"detail": "Invalid JWT token"})
            return None
        if header.startswith("Basic "):
            user, _, pw = base64.b64decode(header[6:]).decode().partition(":")
            if (user, pw) == (self.username, self.password):
                return None
            return json_response(403, {"detail": None, "status": 403, "title": "Forbidden"})
        if header.startswith("Bearer ") and header[7:] in self.valid_tokens:
            return None
        cookie = request.headers.get("cookie", "")
        if not header and cookie.startswith("session=") and cookie[8:] in self.sessions:
            return None
        return json_response(401, {"detail": "Unauthorized", "status": 401, "title": "Unauthorized"})


def make_instance(
    fake: FakeAirflow, *, url: str = URL, max_retries: int = 3, page_size: int = 100, **kwargs: Any
) -> AirflowInstance:
    instance = AirflowInstance(
        AirflowBasicAuthBackend(url, fake.username, fake.password),
        name="test_airflow",
        max_retries=max_retries,
        page_size=page_size,
        transport=fake.transport(),
        **kwargs,
    )
    # Unit tests never wait for real: record the sleeps instead.
    instance.sleeps = []  # type: ignore[attr-defined]
    instance._http.sleep = instance.sleeps.append  # type: ignore[attr-defined]
    instance._poll_sleep = lambda seconds: None
    return instance


def task_v2(task_id: str, downstream: list[str] | None = None, **over: Any) -> dict[str, Any]:
    """A task as Airflow 3.3 lists it (TaskResponse of `GET /api/v2/dags/{dag_id}/tasks`)."""
    body: dict[str, Any] = {
        "task_id": task_id,
        "task_display_name": task_id,
        "owner": "data-eng",
        "start_date": None,
        "end_date": None,
        "trigger_rule": "all_success",
        "depends_on_past": False,
        "wait_for_downstream": False,
        "retries": 0.0,
        "queue": "default",
        "pool": "default_pool",
        "pool_slots": 1.0,
        "execution_timeout": None,
        "retry_delay": {"__type": "TimeDelta", "days": 0, "seconds": 300, "microseconds": 0},
        "retry_exponential_backoff": 0.0,
        "priority_weight": 1.0,
        "weight_rule": "downstream",
        "ui_color": "#ffefeb",
        "ui_fgcolor": "#000",
        "template_fields": ["templates_dict", "op_args", "op_kwargs"],
        "downstream_task_ids": downstream or [],
        "doc_md": None,
        "operator_name": "PythonOperator",
        "params": {},
        "class_ref": {
            "module_path": "airflow.providers.standard.operators.python",
            "class_name": "PythonOperator",
        },
        "is_mapped": False,
        "extra_links": [],
    }
    body.update(over)
    return body


def task_v1(task_id: str, downstream: list[str] | None = None, **over: Any) -> dict[str, Any]:
    """A task as Airflow 2.11 lists it (TaskSchema of `GET /api/v1/dags/{dag_id}/tasks`)."""
    body: dict[str, Any] = {
        "class_ref": {"module_path": "airflow.operators.python", "class_name": "PythonOperator"},
        "operator_name": "PythonOperator",
        "task_id": task_id,
        "task_display_name": task_id,
        "owner": "data-eng",
        "start_date": "2024-01-01T00:00:00+00:00",
        "end_date": None,
        "trigger_rule": "all_success",
        "extra_links": [],
        "depends_on_past": False,
        "wait_for_downstream": False,
        "retries": 0,
        "queue": "default",
        "pool": "default_pool",
        "pool_slots": 1,
        "execution_timeout": None,
        "retry_delay": {"__type": "TimeDelta", "days": 0, "seconds": 300, "microseconds": 0},
        "retry_exponential_backoff": False,
        "priority_weight": 1,
        "weight_rule": "downstream",
        "ui_color": "#ffefeb",
        "ui_fgcolor": "#000",
        "template_fields": ["templates_dict", "op_args", "op_kwargs"],
        "sub_dag": None,
        "downstream_task_ids": downstream or [],
        "params": {},
        "is_mapped": False,
        "doc_md": None,
    }
    body.update(over)
    return body


class AuthProxy:
    """An authenticating reverse proxy in front of a FakeAirflow (nginx `auth_basic`, an SSO gateway): a
    request that `accepts` refuses gets `status` from the proxy itself, health checks included; the others
    reach Airflow unchanged."""

    def __init__(
        self, airflow: FakeAirflow, accepts: Callable[[httpx.Request], bool], status: int = 401
    ) -> None:
        self.airflow = airflow
        self.accepts = accepts
        self.status = status
        self.refused: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if not self.accepts(request):
            self.refused.append(request.url.path)
            return httpx.Response(
                self.status,
                text=f"<html><body><h1>{self.status}</h1>proxy says no</body></html>",
                headers={"content-type": "text/html", "www-authenticate": 'Basic realm="proxy"'},
            )
        return self.airflow(request)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


def basic_auth_of(username: str, password: str) -> Callable[[httpx.Request], bool]:
    """For AuthProxy: accept requests carrying this user's HTTP basic credentials."""
    expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return lambda request: request.headers.get("authorization") == expected


def bearer_of(token: str) -> Callable[[httpx.Request], bool]:
    """For AuthProxy: accept requests carrying this bearer token."""
    return lambda request: request.headers.get("authorization") == f"Bearer {token}"
