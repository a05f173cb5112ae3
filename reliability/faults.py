"""httpx transports that inject faults between airpeer and an Airflow (real, or the in-memory fake).

`FaultTransport` wraps another transport and, for the requests a test picks (by endpoint and by the number
of that request), answers with a fault instead of forwarding, or runs a hook first (to kill a real
api-server between two pages). `ClockShiftTransport` makes a real Airflow look as if its clock were ahead or
behind: it shifts the `Date` header and every timestamp in the answers, and shifts the bounds of the
requests back, so the server still selects what a skewed server would.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

import httpx

#: The one endpoint the sensor reads completions from.
RUNS_LIST = "/dags/~/dagRuns/list"


def is_runs_list(request: httpx.Request) -> bool:
    """Whether a request is a page of the runs list (`POST /api/v{1,2}/dags/~/dagRuns/list`)."""
    return request.method == "POST" and request.url.path.endswith(RUNS_LIST)


@dataclass
class Fault:
    """What to do instead of forwarding one request.

    kind:
        * ``status``: answer `status` (with `Retry-After: retry_after` when given) and a JSON error body;
        * ``reset``: the connection is reset by the peer (`httpx.ReadError`);
        * ``disconnect``: the server closes without answering (`httpx.RemoteProtocolError`);
        * ``refused``: nothing listens (`httpx.ConnectError`);
        * ``read_timeout``: no answer within the read timeout (`httpx.ReadTimeout`);
        * ``truncate``: forward, then cut the answer's body in the middle of its JSON;
        * ``hook``: call `hook()` (e.g. stop the api-server), then forward.
    times: how many consecutive matching attempts get the fault (retries included).
    """

    kind: str
    status: int = 500
    retry_after: str | None = None
    times: int = 1
    hook: Callable[[], None] | None = None

    def describe(self) -> str:
        if self.kind == "status":
            extra = f" Retry-After {self.retry_after}" if self.retry_after is not None else ""
            return f"HTTP {self.status}{extra}"
        return self.kind


@dataclass
class FaultTransport(httpx.BaseTransport):
    """Forwards to `inner`, injecting `faults[n]` on the n-th (1-based) request for which `match` is true.

    A fault with `times=k` applies to k consecutive matching requests starting at n (the retries of one
    logical request are separate requests, so `times` larger than the client's retries makes the page fail).
    """

    inner: httpx.BaseTransport
    faults: dict[int, Fault] = field(default_factory=dict)
    match: Callable[[httpx.Request], bool] = is_runs_list
    #: Matching requests seen so far (faulted or not).
    seen: int = 0
    #: (request number, fault description) of every fault injected.
    injected: list[tuple[int, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _fault_for(self, n: int) -> Fault | None:
        for start, fault in self.faults.items():
            if start <= n < start + fault.times:
                return fault
        return None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        fault: Fault | None = None
        if self.match(request):
            with self._lock:
                self.seen += 1
                n = self.seen
                fault = self._fault_for(n)
                if fault is not None:
                    self.injected.append((n, fault.describe()))
        if fault is None:
            return self.inner.handle_request(request)
        if fault.kind == "status":
            headers = {"content-type": "application/json"}
            if fault.retry_after is not None:
                headers["retry-after"] = fault.retry_after
            body = json.dumps({"detail": f"injected {fault.status}"}).encode()
            return httpx.Response(fault.status, headers=headers, content=body, request=request)
        if fault.kind == "reset":
            raise httpx.ReadError("[Errno 104] Connection reset by peer", request=request)
        if fault.kind == "disconnect":
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        if fault.kind == "refused":
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        if fault.kind == "read_timeout":
            raise httpx.ReadTimeout("The read operation timed out", request=request)
        if fault.kind == "hook":
            assert fault.hook is not None
            fault.hook()
            return self.inner.handle_request(request)
        if fault.kind == "truncate":
            response = self.inner.handle_request(request)
            response.read()
            content = response.content
            cut = content[: max(1, len(content) // 2)]
            dropped = ("content-length", "content-encoding", "transfer-encoding")
            headers = [(k, v) for k, v in response.headers.items() if k.lower() not in dropped]
            return httpx.Response(response.status_code, headers=headers, content=cut, request=request)
        raise ValueError(f"unknown fault kind {fault.kind!r}")

    def close(self) -> None:
        self.inner.close()


# -- clock skew ---------------------------------------------------------------------------------------------

_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def _shift_value(value: Any, shift: timedelta) -> Any:
    if isinstance(value, str) and _TIMESTAMP.match(value):
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return (parsed + shift).astimezone(timezone.utc).isoformat(timespec="microseconds")
    if isinstance(value, dict):
        return {k: _shift_value(v, shift) for k, v in value.items()}
    if isinstance(value, list):
        return [_shift_value(v, shift) for v in value]
    return value


@dataclass
class ClockShiftTransport(httpx.BaseTransport):
    """Makes the Airflow behind `inner` look as if its clock were off by `shift` (positive: ahead).

    Answers: the `Date` header and every ISO timestamp in JSON bodies move by +shift. Requests: the
    timestamps in JSON bodies (the runs list's `end_date_*` bounds) move by -shift, so the real server
    selects by its true clock what the skewed server would select by its own.
    """

    inner: httpx.BaseTransport
    shift: timedelta

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.content and request.headers.get("content-type", "").startswith("application/json"):
            body = _shift_value(json.loads(request.content), -self.shift)
            content = json.dumps(body).encode()
            headers = [(k, v) for k, v in request.headers.items() if k.lower() != "content-length"]
            headers.append(("content-length", str(len(content))))
            request = httpx.Request(
                request.method, request.url, headers=headers, content=content, extensions=request.extensions
            )
        response = self.inner.handle_request(request)
        response.read()
        # The body is re-encoded decoded (httpx already undid any gzip), so its encoding headers go too.
        dropped = ("content-length", "date", "content-encoding", "transfer-encoding")
        headers = [(k, v) for k, v in response.headers.items() if k.lower() not in dropped]
        date = response.headers.get("date")
        if date:
            shifted = parsedate_to_datetime(date) + self.shift
            headers.append(("date", format_datetime(shifted.astimezone(timezone.utc), usegmt=True)))
        content = response.content
        if response.headers.get("content-type", "").startswith("application/json") and content:
            with contextlib.suppress(ValueError):
                content = json.dumps(_shift_value(json.loads(content), self.shift)).encode()
        return httpx.Response(response.status_code, headers=headers, content=content, request=request)

    def close(self) -> None:
        self.inner.close()


@dataclass
class RevokingTransport(httpx.BaseTransport):
    """Refuses (401, as Airflow 3 does for a revoked or expired JWT) the bearer tokens in `revoked`.

    Airflow 3.3 cannot be told to revoke one given token from outside; this stands in front of the real
    server and refuses a token the test revoked, so the client must log in again at the real `/auth/token`.
    """

    inner: httpx.BaseTransport
    revoked: set[str] = field(default_factory=set)
    #: The bearer token of the last request forwarded with one.
    last_token: str | None = None
    logins: int = 0
    refusals: int = 0

    def revoke_current(self) -> None:
        if self.last_token is not None:
            self.revoked.add(self.last_token)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/auth/token"):
            self.logins += 1
        header = request.headers.get("authorization", "")
        if header.startswith("Bearer "):
            token = header[len("Bearer ") :]
            if token in self.revoked:
                self.refusals += 1
                return httpx.Response(401, json={"detail": "Token has been revoked"}, request=request)
            self.last_token = token
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def network_transport(verify: bool | str = True) -> httpx.HTTPTransport:
    """The transport httpx would use on its own (so wrappers can sit in front of a real server)."""
    return httpx.HTTPTransport(verify=verify)


__all__ = [
    "RUNS_LIST",
    "ClockShiftTransport",
    "Fault",
    "FaultTransport",
    "RevokingTransport",
    "is_runs_list",
    "network_transport",
]
