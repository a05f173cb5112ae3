"""The HTTP layer of `AirflowInstance`: one pooled client, timeouts, retries, deadlines, error mapping.

Every REST call goes through `HttpSession.call`, which returns the parsed answer or raises one of the
errors of `errors.py`. The messages are built from the instance name, the URL, the method, the path and
the status only: never from headers or request bodies, so they cannot carry credentials.
"""

from __future__ import annotations

import contextvars
import ipaddress
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Collection, Generator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

import httpx

from . import _redact
from ._retry import BodyNotJSON, RetryableStatus, build_retrying, parse_retry_after
from .errors import (
    AirflowAuthError,
    AirflowConfigError,
    AirflowConnectionError,
    AirflowError,
    AirflowNotFoundError,
    AirflowResponseError,
)

logger = logging.getLogger("dagster_airpeer.airflow")
_redact.install()

T = TypeVar("T")

CONNECT_TIMEOUT_SECONDS = 5.0

#: The earliest `time.monotonic()` instant by which the current logical operation must be done, if any.
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("airpeer_deadline", default=None)


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Within the block no request or retry starts after `seconds` from now (nested: earliest wins)."""
    if seconds < 0:
        raise ValueError("deadline seconds must be >= 0")
    new = time.monotonic() + seconds
    current = _deadline.get()
    token = _deadline.set(new if current is None else min(current, new))
    try:
        yield
    finally:
        _deadline.reset(token)


def current_deadline() -> float | None:
    """The deadline in force in this context (a `time.monotonic()` instant), or None."""
    return _deadline.get()


@dataclass(frozen=True)
class Result(Generic[T]):
    """A parsed answer, with the response it came from and how many attempts it took."""

    value: T
    response: httpx.Response
    attempts: int


class _NoCookies(DefaultCookiePolicy):
    # The auth backend handles Airflow's session cookie itself (it decides when the cookie replaces the
    # password); a client-side jar would send it on every request regardless.
    def set_ok(self, cookie: Any, request: Any) -> bool:
        return False


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def error_detail(response: httpx.Response, limit: int = 500) -> str:
    """Airflow's own explanation of an error answer (`detail` of v1 problem+json and v2 FastAPI errors)."""
    text: str
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
    else:
        detail = body.get("detail", body) if isinstance(body, dict) else body
        if isinstance(detail, str):
            text = detail
        elif isinstance(detail, list):
            # FastAPI validation errors: [{"loc": [...], "msg": "..."}]
            parts = []
            for item in detail:
                if isinstance(item, dict):
                    loc = ".".join(str(p) for p in item.get("loc", []))
                    parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", "")))
                else:
                    parts.append(str(item))
            text = "; ".join(parts)
        else:
            text = json.dumps(detail)
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[:limit] + "..."
    return text or response.reason_phrase


class HttpSession:
    """Sends requests to one Airflow instance; used by `AirflowInstance`, not a public API."""

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        auth: httpx.Auth | None,
        timeout: float,
        max_retries: int,
        verify: bool | str,
        transport: httpx.BaseTransport | None,
    ) -> None:
        self.name = name
        self.base_url = base_url
        self.auth = auth
        self.timeout = timeout
        self.max_retries = max_retries
        self.verify = verify
        self.transport = transport
        # Overridable for tests and tuning; the sleep is what tenacity calls between attempts.
        self.initial_backoff = 0.5
        self.max_backoff = 8.0
        self.sleep: Callable[[float], None] = time.sleep
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()
        self._clock_lock = threading.Lock()
        self._server_date: datetime | None = None
        self._server_date_at: float = 0.0
        self._warned_plain_http = False

    # -- client ---------------------------------------------------------------------------------------------

    def client(self) -> httpx.Client:
        """The pooled client, created on first use."""
        client = self._client
        if client is not None:
            return client
        with self._client_lock:
            if self._client is None:
                self._warn_if_plain_http()
                self._client = httpx.Client(
                    timeout=httpx.Timeout(self.timeout, connect=CONNECT_TIMEOUT_SECONDS),
                    verify=self._ssl_verify(),
                    transport=self.transport,
                    # The jar itself, not httpx.Cookies(jar): httpx copies a Cookies object's cookies into a
                    # fresh default jar and would drop the policy (cookies the server sets would then be sent).
                    cookies=CookieJar(policy=_NoCookies()),
                    follow_redirects=False,
                    limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
                    headers={"Accept": "application/json", "User-Agent": "dagster-airpeer"},
                )
            return self._client

    def _ssl_verify(self) -> bool | ssl.SSLContext:
        # httpx 0.28 deprecates a CA bundle path for `verify`: build the context ourselves.
        if isinstance(self.verify, str):
            try:
                return ssl.create_default_context(cafile=self.verify)
            except (OSError, ssl.SSLError) as exc:
                raise AirflowConfigError(
                    f"`verify` must be True, False or the path of a readable CA bundle (PEM); "
                    f"{self.verify!r} cannot be used: {exc}"
                ) from None
        return self.verify

    def _warn_if_plain_http(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme == "http" and not _is_loopback(parts.hostname or "") and not self._warned_plain_http:
            self._warned_plain_http = True
            logger.warning(
                "Airflow instance %r is reached over plain http at %s: credentials travel unencrypted. "
                "Use https for anything but a local Airflow.",
                self.name,
                self.base_url,
            )

    def close(self) -> None:
        """Close the pooled connections; a later request opens a new client."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- the server's clock ---------------------------------------------------------------------------------

    @staticmethod
    def date_of(response: httpx.Response) -> datetime | None:
        """The server's clock when it sent `response` (its `Date` header, UTC), or None."""
        header = response.headers.get("date")
        if not header:
            return None
        try:
            when: datetime = parsedate_to_datetime(header)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return when.astimezone(timezone.utc)

    def _note_server_date(self, response: httpx.Response) -> None:
        when = self.date_of(response)
        if when is None:
            return
        with self._clock_lock:
            self._server_date = when
            self._server_date_at = time.monotonic()

    def server_time(self) -> datetime | None:
        """The server's clock now, from the last `Date` header plus the time elapsed since it arrived."""
        with self._clock_lock:
            if self._server_date is None:
                return None
            return self._server_date + timedelta(seconds=time.monotonic() - self._server_date_at)

    # -- requests -------------------------------------------------------------------------------------------

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        parse: Callable[[httpx.Response], T],
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        ok: Collection[int] = (200,),
        passthrough: Collection[int] = (),
        authenticate: bool = True,
    ) -> Result[T]:
        """Send one logical request (with retries) and parse its answer.

        `path` must already be URL-quoted. `what` names the object for error messages ("DAG 'x'").
        Statuses in `ok` are parsed with `parse`; statuses in `passthrough` are returned unparsed (the value
        is then None-like and the caller looks at `response.status_code`).
        """
        client = self.client()
        url = self.url(path)
        limit = current_deadline()
        retrying = build_retrying(
            max_retries=self.max_retries,
            initial_backoff=self.initial_backoff,
            max_backoff=self.max_backoff,
            sleep=self.sleep,
            deadline=limit,
        )
        attempts = 0
        try:
            for attempt in retrying:
                with attempt:
                    attempts += 1
                    timeout = self._attempt_timeout(limit, method, path, attempts)
                    request = client.build_request(
                        method, url, params=params, json=json_body, headers=headers, timeout=timeout
                    )
                    response = self._send(client, request, authenticate)
                    return self._handle(
                        response, what=what, parse=parse, ok=ok, passthrough=passthrough, attempts=attempts
                    )
        except RetryableStatus as exc:
            raise self._gave_up(method, path, attempts, limit, _status_text(exc.response)) from None
        except BodyNotJSON as exc:
            raise AirflowResponseError(
                f"Airflow instance {self.name!r} answered {method} {url} with a body that is not valid JSON "
                f"(HTTP {exc.response.status_code}, {len(exc.response.content)} bytes, "
                f"{attempts} attempt(s)): {_preview(exc.response)}"
            ) from None
        except httpx.TransportError as exc:
            raise self._gave_up(method, path, attempts, limit, _transport_text(exc)) from None
        raise AssertionError("unreachable")  # pragma: no cover - tenacity either returns or raises

    def _attempt_timeout(self, limit: float | None, method: str, path: str, attempts: int) -> httpx.Timeout:
        if limit is None:
            return httpx.Timeout(self.timeout, connect=CONNECT_TIMEOUT_SECONDS)
        left = limit - time.monotonic()
        if left <= 0:
            raise AirflowConnectionError(
                f"Gave up on {method} {self.url(path)} (Airflow instance {self.name!r}): the time budget of "
                f"the current operation ran out"
                + (f" after {attempts - 1} attempt(s)." if attempts > 1 else ".")
            )
        return httpx.Timeout(min(self.timeout, left), connect=min(CONNECT_TIMEOUT_SECONDS, left))

    def _send(self, client: httpx.Client, request: httpx.Request, authenticate: bool) -> httpx.Response:
        started = time.perf_counter()
        status: int | str = "error"
        try:
            auth = self.auth if authenticate and self.auth is not None else _NO_AUTH
            response = client.send(request, auth=auth)
            status = response.status_code
            return response
        finally:
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "%s %s -> %s in %.1f ms (%s)",
                    request.method,
                    request.url.path,
                    status,
                    (time.perf_counter() - started) * 1000.0,
                    self.name,
                )

    def _handle(
        self,
        response: httpx.Response,
        *,
        what: str,
        parse: Callable[[httpx.Response], T],
        ok: Collection[int],
        passthrough: Collection[int],
        attempts: int,
    ) -> Result[T]:
        self._note_server_date(response)
        status = response.status_code
        request = response.request
        if status in ok:
            return Result(parse(response), response, attempts)
        if status in passthrough:
            return Result(None, response, attempts)  # type: ignore[arg-type]
        if status >= 500 or status == 429:
            raise RetryableStatus(response, parse_retry_after(response.headers.get("retry-after")))
        if status in (401, 403):
            raise AirflowAuthError(
                f"Airflow instance {self.name!r} refused {request.method} {request.url.path} "
                f"(HTTP {status}): {error_detail(response)}. Check the credentials given to airpeer and the "
                "user's permissions."
            )
        if status == 404:
            raise AirflowNotFoundError(
                f"{what} was not found on Airflow instance {self.name!r} ({self.base_url}): "
                f"{request.method} {request.url.path} answered 404 ({error_detail(response)})."
            )
        raise AirflowError(
            f"Airflow instance {self.name!r} rejected {request.method} {request.url.path} for {what} "
            f"(HTTP {status}): {error_detail(response)}"
        )

    def _gave_up(
        self, method: str, path: str, attempts: int, limit: float | None, happened: str
    ) -> AirflowConnectionError:
        budget = ""
        if limit is not None and attempts <= self.max_retries:
            # tenacity stopped before using all retries: only the deadline does that.
            budget = " (stopped early: the time budget of the current operation ran out)"
        return AirflowConnectionError(
            f"Could not get an answer from Airflow instance {self.name!r} for {method} {self.url(path)}: "
            f"{happened}, after {attempts} attempt(s){budget}. Check that Airflow is running and reachable "
            "at this URL."
        )


class _NoAuth(httpx.Auth):
    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        yield request


_NO_AUTH = _NoAuth()


def _status_text(response: httpx.Response) -> str:
    return f"it answered HTTP {response.status_code} {response.reason_phrase} ({error_detail(response, 200)})"


def _transport_text(exc: httpx.TransportError) -> str:
    kind = {
        httpx.ConnectError: "the connection failed",
        httpx.ConnectTimeout: "connecting timed out",
        httpx.ReadTimeout: "the answer timed out",
        httpx.WriteTimeout: "sending timed out",
        httpx.PoolTimeout: "no connection was free in time",
        httpx.RemoteProtocolError: "the server broke the HTTP exchange",
        httpx.ReadError: "reading the answer failed",
    }.get(type(exc), "the request failed")
    text = str(exc) or type(exc).__name__
    return f"{kind} ({type(exc).__name__}: {text})"


def _preview(response: httpx.Response, limit: int = 120) -> str:
    text = " ".join(response.text[:limit].split())
    return repr(text) + ("..." if len(response.content) > limit else "")
