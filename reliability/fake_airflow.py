"""An in-memory Airflow with only what the airpeer sensor asks: health, version, login, DAGs, the runs list.

It exists for the faults a real Airflow cannot be made to produce on demand: answers that are malformed in a
chosen way, a token revoked between two pages, a clock that reads what the test says. Everything else is
tested against real Airflow.

The runs list (`POST /api/{v}/dags/~/dagRuns/list`) follows Airflow's documented semantics: filter on state
and on the stored end date (bounds inclusive), order by `end_date` then primary key or by primary key alone,
`page_offset`/`page_limit`, `total_entries` of the whole filtered result. What it *sends* for a run is the
run's wire dictionary, which a test may break (drop a field, null a date) without changing where the run
sits in the table: that is how a malformed row is served, exactly like a real server serialising a row its
own schema does not expect.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any
from urllib.parse import unquote

import httpx

HEALTH = {
    "metadatabase": {"status": "healthy"},
    "scheduler": {"status": "healthy", "latest_scheduler_heartbeat": None},
    "dag_processor": {"status": "healthy", "latest_dag_processor_heartbeat": None},
}


def iso(value: datetime) -> str:
    """An Airflow-style ISO timestamp (UTC, microseconds, `Z`)."""
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def make_jwt(exp: float, sub: str = "admin", serial: int = 0, iat: float | None = None) -> str:
    """An unsigned JWT-shaped token with an `exp` claim, and `iat` if given, as Airflow 3 issues them (the
    client only reads `exp` and `iat`; the fake checks identity)."""

    def b64(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    claims: dict[str, Any] = {"sub": sub, "exp": int(exp), "jti": serial}
    if iat is not None:
        claims["iat"] = int(iat)
    return f"{b64({'alg': 'HS512', 'typ': 'JWT'})}.{b64(claims)}.c2ln"


@dataclass
class FakeRun:
    """One row of the runs table: where it sorts (`pk`, `end`, `state`) and what is sent for it (`wire`)."""

    pk: int
    dag_id: str
    run_id: str
    state: str
    end: datetime | None
    wire: dict[str, Any]


@dataclass
class FakeAirflow:
    """An Airflow 3 (`version="v2"`) or Airflow 2 (`version="v1"`) answering from memory.

    Args:
        version: which REST API it speaks.
        username, password: the only account; v2 logs in at `/auth/token`, v1 checks basic auth.
        clock: Airflow's clock (`Date` header, token expiry). Defaults to the real clock.
        page_cap: the server's `maximum_page_limit`.
        token_lifetime: seconds a JWT is valid.
    """

    version: str = "v2"
    username: str = "admin"
    password: str = "admin"  # noqa: S105 - a fake server's test password
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))
    page_cap: int = 100
    token_lifetime: float = 86400.0
    dags: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: list[FakeRun] = field(default_factory=list)
    #: Every request seen, as (method, decoded path).
    requests: list[tuple[str, str]] = field(default_factory=list)
    logins: int = 0
    refused: int = 0
    #: Tokens that `/auth/token` issued and that were not revoked.
    valid_tokens: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- building the state -----------------------------------------------------------------------------

    def add_dag(self, dag_id: str, **over: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "dag_id": dag_id,
            "dag_display_name": dag_id,
            "is_paused": False,
            "fileloc": f"/dags/{dag_id}.py",
            "file_token": "token",
            "owners": ["airflow"],
            "description": None,
            "tags": [{"name": "fake"}],
            "last_parsed_time": iso(self.clock()),
        }
        body.update({"is_stale": False, "timetable_summary": None} if self.version == "v2" else {})
        body.update({"is_active": True, "schedule_interval": None} if self.version == "v1" else {})
        body.update(over)
        self.dags[dag_id] = body
        return body

    def add_run(
        self,
        dag_id: str,
        run_id: str,
        end: datetime | None,
        *,
        state: str = "success",
        start: datetime | None = None,
        **over: Any,
    ) -> FakeRun:
        """Add a run that ended at `end` (None: a terminal run Airflow has not stamped yet)."""
        if dag_id not in self.dags:
            self.add_dag(dag_id)
        start = start if start is not None else (end - timedelta(seconds=3) if end else None)
        wire: dict[str, Any] = {
            "dag_run_id": run_id,
            "dag_id": dag_id,
            "logical_date": None,
            "queued_at": iso(start - timedelta(seconds=1)) if start else None,
            "start_date": iso(start) if start else None,
            "end_date": iso(end) if end else None,
            "data_interval_start": None,
            "data_interval_end": None,
            "run_type": "manual",
            "state": state,
            "conf": {},
            "note": None,
        }
        if self.version == "v2":
            wire.update({"run_after": wire["queued_at"], "triggered_by": "rest_api"})
        else:
            wire.update({"execution_date": wire["queued_at"], "external_trigger": True})
        wire.update(over)
        run = FakeRun(len(self.runs) + 1, dag_id, run_id, state, end, wire)
        with self._lock:
            self.runs.append(run)
        return run

    def delete_run(self, dag_id: str, run_id: str) -> None:
        with self._lock:
            self.runs = [r for r in self.runs if (r.dag_id, r.run_id) != (dag_id, run_id)]

    def revoke_tokens(self) -> None:
        """Forget every issued token, as Airflow does after a token revocation or a JWT secret change."""
        with self._lock:
            self.valid_tokens.clear()

    def completions(self) -> set[tuple[str, str, str]]:
        """Every (dag_id, run_id, end_date ISO) the table holds in a terminal state."""
        return {
            (r.dag_id, r.run_id, r.end.astimezone(timezone.utc).isoformat(timespec="microseconds"))
            for r in self.runs
            if r.end is not None and r.state in ("success", "failed")
        }

    # -- serving ----------------------------------------------------------------------------------------

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def _answer(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
        all_headers = {"date": format_datetime(self.clock().astimezone(timezone.utc), usegmt=True)}
        all_headers.update(headers or {})
        if body is None:
            return httpx.Response(status, headers=all_headers)
        return httpx.Response(status, json=body, headers=all_headers)

    def _authorised(self, request: httpx.Request) -> bool:
        header = request.headers.get("authorization", "")
        if self.version == "v1":
            expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            return header == f"Basic {expected}"
        token = header.removeprefix("Bearer ")
        if token not in self.valid_tokens:
            return False
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"]) > self.clock().timestamp()

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = unquote(request.url.path)
        with self._lock:
            self.requests.append((request.method, path))
        v = self.version
        if path in ("/api/v2/monitor/health", "/api/v1/health"):
            return self._answer(200, HEALTH) if path.startswith(f"/api/{v}/") else self._answer(404, {})
        if path == "/auth/token" and request.method == "POST" and v == "v2":
            self.logins += 1
            body = json.loads(request.content or b"{}")
            if body.get("username") != self.username or body.get("password") != self.password:
                return self._answer(401, {"detail": "Invalid credentials"})
            issued = self.clock().timestamp()
            token = make_jwt(issued + self.token_lifetime, self.username, self.logins, iat=issued)
            with self._lock:
                self.valid_tokens.add(token)
            return self._answer(201, {"access_token": token})
        if not path.startswith(f"/api/{v}/"):
            return self._answer(404, {"detail": "Not Found"})
        if not self._authorised(request):
            self.refused += 1
            return self._answer(401 if v == "v1" else 403, {"detail": "Invalid JWT token"})
        rest = path[len(f"/api/{v}") :]
        if rest == "/version":
            return self._answer(200, {"version": "3.3.2" if v == "v2" else "2.11.2", "git_version": None})
        if rest == "/dags" and request.method == "GET":
            offset = int(request.url.params.get("offset", 0))
            limit = min(int(request.url.params.get("limit", 100)), self.page_cap)
            ordered = [self.dags[k] for k in sorted(self.dags)]
            return self._answer(
                200, {"dags": ordered[offset : offset + limit], "total_entries": len(ordered)}
            )
        if rest == "/dags/~/dagRuns/list" and request.method == "POST":
            return self._list_runs(json.loads(request.content))
        if rest.startswith("/dags/") and request.method == "GET" and rest.count("/") >= 2:
            dag_id = rest[len("/dags/") :]
            if dag_id in self.dags:
                return self._answer(200, self.dags[dag_id])
            return self._answer(404, {"detail": f"DAG {dag_id} not found"})
        return self._answer(404, {"detail": "Not Found"})

    def _list_runs(self, body: dict[str, Any]) -> httpx.Response:
        def bound(name: str) -> datetime | None:
            value = body.get(name)
            return datetime.fromisoformat(value) if value else None

        gte, lte = bound("end_date_gte"), bound("end_date_lte")
        states = set(body.get("states") or [])
        with self._lock:
            rows = [
                r
                for r in self.runs
                if r.end is not None
                and (not states or r.state in states)
                and (gte is None or r.end >= gte)
                and (lte is None or r.end <= lte)
            ]
        if body.get("order_by") == "id":
            rows.sort(key=lambda r: r.pk)
        else:
            rows.sort(key=lambda r: (r.end or datetime.min.replace(tzinfo=timezone.utc), r.pk))
        offset = int(body.get("page_offset", 0))
        limit = min(int(body.get("page_limit", 100)), self.page_cap)
        page = rows[offset : offset + limit]
        return self._answer(200, {"dag_runs": [r.wire for r in page], "total_entries": len(rows)})


class ManualClock:
    """A clock a test moves by hand (for Airflow's clock in the fake)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def real_clock_shifted(shift: timedelta) -> Callable[[], datetime]:
    """The real clock moved by `shift` (an Airflow whose clock is wrong)."""
    return lambda: datetime.now(timezone.utc) + shift


def populated_fake(version: str = "v2", *, runs: int = 60, ties: int = 15) -> FakeAirflow:
    """A fake Airflow with `runs` finished runs over the last 50 minutes; `ties` of them share one end date.

    Every fifth run failed. The tie group is older than the late-commit window and larger than a page of
    10, so fault positions land in ordinary pages and inside tie paging alike.
    """
    fake = FakeAirflow(version=version)
    for dag_id in ("alpha", "beta", "gamma"):
        fake.add_dag(dag_id)
    now = datetime.now(timezone.utc)
    tie_end = now - timedelta(minutes=30)
    for i in range(runs):
        end = tie_end if i < ties else now - timedelta(minutes=50) + timedelta(seconds=45 * i)
        fake.add_run(
            ("alpha", "beta", "gamma")[i % 3],
            f"run_{i:03d}",
            end,
            state="failed" if i % 5 == 4 else "success",
        )
    return fake


__all__ = [
    "HEALTH",
    "FakeAirflow",
    "FakeRun",
    "ManualClock",
    "iso",
    "make_jwt",
    "populated_fake",
    "real_clock_shifted",
]
