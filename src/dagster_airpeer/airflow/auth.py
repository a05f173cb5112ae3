"""Authentication against Airflow's REST API, as `httpx.Auth` flows.

Airflow 2 (REST v1) accepts HTTP basic auth; Airflow 3 (REST v2) wants a JWT obtained from
`POST /auth/token`. `AirflowBasicAuthBackend` speaks both, choosing by the path of each request, so the
same object works before and after an upgrade. Subclass `AirflowAuthBackend` for other schemes.

Secrets are never logged, never put into exception messages and never shown by `repr`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Iterator
from contextlib import contextmanager
from http.cookies import CookieError, SimpleCookie
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import httpx

from .errors import AirflowAuthError, AirflowConfigError

logger = logging.getLogger("dagster_airpeer.airflow")

__all__ = [
    "AirflowAuthBackend",
    "AirflowBasicAuthBackend",
    "AirflowTokenAuthBackend",
    "SecretValue",
]

#: Statuses by which Airflow refuses a request: v1 says 401 (or 403 from some backends) for credentials and
#: 403 for a missing permission; v2 says 401 for a missing or expired token, and 403 for a garbage or
#: revoked one and for a missing permission (see `_blames_the_token`).
_REFUSED = (401, 403)

#: A token is renewed shortly before its `exp`, so that a request never leaves with a token that expires on
#: its way (and to absorb a little clock skew between us and Airflow): a tenth of its lifetime, at most 60 s,
#: at least 1 s but never more than half of it. A fixed 60 s would renew a token that lives a minute or
#: less on every request (see `_renew_margin`).
_RENEW_MARGIN_SECONDS = 60.0
_RENEW_MARGIN_FRACTION = 0.1
_RENEW_MARGIN_FLOOR_SECONDS = 1.0

#: UI logins tried (Airflow 2) before settling for basic auth on every request.
_MAX_UI_LOGINS = 3
#: After Airflow 2's login form answered 429 (5 logins per 40 s per client by default), wait this long before
#: trying it again; basic auth carries on meanwhile.
_LOGIN_RATE_LIMIT_BACKOFF_SECONDS = 60.0


#: How long a request waits for a login another request started when its own request carries no time limit.
#: A waiting request takes the login over after its own time limit: a login whose flow was dropped without
#: being closed (the caller vanished) then holds nobody up for good.
_DEFAULT_LOGIN_WAIT_SECONDS = 60.0


class _Login:
    """One login in flight. The requests that need a login meanwhile wait for it instead of logging in too
    (single flight); no lock is held while the login request is on the wire."""

    def __init__(self) -> None:
        self.done = threading.Event()


def _login_wait_seconds(request: httpx.Request) -> float:
    """How long `request` may wait for someone else's login: the sum of its own time limits (a login is one
    request like it), or a minute when it has none."""
    timeout = request.extensions.get("timeout")
    if isinstance(timeout, dict):
        limits = [v for v in timeout.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if limits:
            return float(sum(limits))
    return _DEFAULT_LOGIN_WAIT_SECONDS


@runtime_checkable
class _HasGetValue(Protocol):
    def get_value(self) -> str | None: ...


#: A setting given either as a plain string or as an object with `get_value()`, such as Dagster's
#: `EnvVar("AIRFLOW_PASSWORD")` (whose `str()` is the variable's *name*, not its value).
SecretValue = str | _HasGetValue


def _var_name(value: object) -> str:
    """The environment variable behind an EnvVar-like value (Dagster's EnvVar refuses `str()`)."""
    name = getattr(value, "env_var_name", None)
    if isinstance(name, str):
        return name
    if isinstance(value, str):
        return str.__str__(value)
    return type(value).__name__


def _resolve(value: SecretValue, setting: str) -> str:
    """Return the actual value of a setting, reading the environment for `EnvVar`-like objects."""
    if isinstance(value, _HasGetValue):
        resolved = value.get_value()
        if resolved is None or resolved == "":
            raise AirflowConfigError(
                f"`{setting}` is taken from the environment variable {_var_name(value)!r}, which is not set "
                "(or empty): set it in the environment of the process that talks to Airflow."
            )
        return resolved
    if not isinstance(value, str):
        raise AirflowConfigError(f"`{setting}` must be a string or an EnvVar, got {type(value).__name__}.")
    return value


def _describe(value: SecretValue) -> str:
    """A safe description of a setting for reprs: the variable name of an EnvVar, never a value."""
    if isinstance(value, _HasGetValue):
        return f"EnvVar({_var_name(value)!r})"
    return "'***'"


def _validate_webserver_url(webserver_url: object) -> str:
    if isinstance(webserver_url, _HasGetValue):
        webserver_url = _resolve(webserver_url, "webserver_url")
    if not isinstance(webserver_url, str):
        raise AirflowConfigError(
            "`webserver_url` must be a string such as 'http://localhost:8080', got "
            f"{type(webserver_url).__name__}."
        )
    parts = urlsplit(webserver_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AirflowConfigError(
            f"`webserver_url` must be an http(s) URL of the Airflow webserver/API server such as "
            f"'http://localhost:8080', got {webserver_url!r}."
        )
    if parts.query or parts.fragment:
        raise AirflowConfigError(
            f"`webserver_url` must not carry a query or fragment, got {webserver_url!r}."
        )
    if parts.username or parts.password:
        # The credentials would otherwise end up in every log line and error message that names the URL.
        raise AirflowConfigError(
            "`webserver_url` must not contain credentials; give them to the auth backend instead."
        )
    return webserver_url.strip().rstrip("/")


def _jwt_claims(token: str) -> dict[str, Any] | None:
    """The claims of a JWT, read without verifying the signature (Airflow verifies the token; we only need
    to know when to renew it). None if the token is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, binascii.Error):
        return None
    return claims if isinstance(claims, dict) else None


def _number_claim(claims: dict[str, Any] | None, name: str) -> float | None:
    value = claims.get(name) if claims is not None else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _jwt_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT (seconds since the epoch), read without verifying the signature.

    None if the token is not a JWT or has no `exp`, in which case it is kept until Airflow refuses it.
    """
    return _number_claim(_jwt_claims(token), "exp")


def _token_lifetime(token: str, received_at: float) -> float | None:
    """How long a token lives: `exp - iat` (both by Airflow's clock, which Airflow 3 puts in every token),
    else `exp` minus when it arrived (by ours). None without an `exp`, or if it is already past."""
    claims = _jwt_claims(token)
    exp = _number_claim(claims, "exp")
    if exp is None:
        return None
    iat = _number_claim(claims, "iat")
    lifetime = exp - iat if iat is not None and iat < exp else exp - received_at
    return lifetime if lifetime > 0 else None


def _renew_margin(lifetime: float | None) -> float:
    """How long before its `exp` a token of this lifetime is renewed: a tenth of its life, capped at 60 s
    (a 24 h token is used until a minute before its end), at least 1 s (a request on its way, a little clock
    skew) but at most half its life, so that even a very short token serves the requests of half its life
    (a 30 s token serves 27 s of requests with one login, not one request). Unknown lifetime: 60 s."""
    if lifetime is None:
        return _RENEW_MARGIN_SECONDS
    relative = max(_RENEW_MARGIN_FRACTION * lifetime, _RENEW_MARGIN_FLOOR_SECONDS)
    return min(_RENEW_MARGIN_SECONDS, relative, lifetime / 2)


def _renewal_point(token: str, received_at: float) -> float | None:
    """When (by `time.time()`) a token is due for renewal; None if it has no `exp` (kept until refused)."""
    exp = _jwt_expiry(token)
    if exp is None:
        return None
    return exp - _renew_margin(_token_lifetime(token, received_at))


class AirflowAuthBackend(httpx.Auth):
    """Base class of the ways airpeer authenticates to Airflow.

    A backend is an `httpx.Auth`: subclasses implement `auth_flow(request)`, a generator that adds
    credentials to the request, yields it, may inspect the response and yield further requests (a login,
    a retry with fresh credentials). A flow that takes locks must not hold them across a `yield` (the
    request is then on the wire, and a flow whose request fails is only closed, never resumed): override
    `sync_auth_flow` as httpx advises for flows that use concurrency primitives. A backend is applied to
    every REST call of an `AirflowInstance` except the health checks used to detect the API version.
    Implementations must be thread-safe: one backend serves concurrent requests. Raise `AirflowAuthError`
    when Airflow refuses the credentials for good; never put a secret in the message.

    `webserver_url` is the base URL of the Airflow webserver (Airflow 2) or API server (Airflow 3), for
    example `http://localhost:8080`; a trailing slash is removed.
    """

    webserver_url: str

    def __init__(self, webserver_url: str) -> None:
        self.webserver_url = _validate_webserver_url(webserver_url)
        self._base_path = urlsplit(self.webserver_url).path.rstrip("/")

    def api_version_of(self, request: httpx.Request) -> str | None:
        """`"v1"` or `"v2"` if the request goes to that REST API of this webserver, else None."""
        path = request.url.path
        if self._base_path:
            if not path.startswith(self._base_path):
                return None
            path = path[len(self._base_path) :]
        if path.startswith("/api/v2/"):
            return "v2"
        if path.startswith("/api/v1/"):
            return "v1"
        return None

    def describe_principal(self) -> str:
        """Who authenticates, for error messages (a username, never a secret). Override when meaningful."""
        return "the configured credentials"

    def open_session(self, send: Callable[[httpx.Request], httpx.Response], timeout: float) -> None:
        """Log in ahead of the next REST call, if this backend keeps a session; `send` sends one request
        without authentication. The default does nothing. Must not raise for a refused or failed login."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(webserver_url={self.webserver_url!r})"


class AirflowTokenAuthBackend(AirflowAuthBackend):
    """A fixed bearer token, sent on every request, for Airflow 2 and 3.

    Useful when something else issues the token (a managed Airflow, a secret manager). It is not renewed:
    when Airflow refuses it, `AirflowAuthError` is raised.
    """

    def __init__(self, webserver_url: str, token: SecretValue) -> None:
        super().__init__(webserver_url)
        self._token_setting = token
        self._token: str | None = None
        self._lock = threading.Lock()

    def _get_token(self) -> str:
        with self._lock:
            if self._token is None:
                self._token = _resolve(self._token_setting, "token")
            return self._token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._get_token()}"
        response = yield request
        if response.status_code in _REFUSED:
            raise AirflowAuthError(
                f"Airflow at {self.webserver_url} refused the bearer token (HTTP {response.status_code}) "
                f"for {request.method} {request.url.path}: the token is invalid, expired or lacks the "
                "permission. Give airpeer a valid token."
            )

    def describe_principal(self) -> str:
        return "the configured bearer token"

    def __repr__(self) -> str:
        return (
            f"AirflowTokenAuthBackend(webserver_url={self.webserver_url!r}, "
            f"token={_describe(self._token_setting)})"
        )


class _UnlockedLoginFlows(httpx.Auth):
    """Runs `auth_flow` for httpx's `Client` with no lock held across a request (httpx's advice for flows
    that use locks is to override `sync_auth_flow`): backends that log in send their logins unlocked, as
    single flights, and read every answer, since login answers are parsed and refusals inspected."""

    requires_response_body = True

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """The flow httpx's `Client` runs. Overridden (httpx's advice for flows that use locks) to say that
        this flow keeps no lock across a request: logins are sent unlocked, as single flights."""
        flow = self.auth_flow(request)
        try:
            outgoing = next(flow)
            while True:
                response = yield outgoing
                response.read()  # the login answers are parsed; refusals are inspected
                try:
                    outgoing = flow.send(response)
                except StopIteration:
                    return
        except StopIteration:
            return
        finally:
            flow.close()

    async def async_auth_flow(  # pragma: no cover - airpeer only uses httpx.Client
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        raise NotImplementedError(
            f"{type(self).__name__} serves httpx.Client only: waiting for another request's login would block "
            "an event loop."
        )
        yield request  # an async generator, as httpx expects


class AirflowBasicAuthBackend(_UnlockedLoginFlows, AirflowAuthBackend):
    """Username and password, for Airflow 2 and Airflow 3 alike.

    - Airflow 2 (`/api/v1/...`): HTTP basic auth. Airflow 2 checks the password hash on every basic-auth
      request (~0.2 s measured on 2.11) and never returns a session from the API; so from the second request
      on, this backend logs in once through the webserver's login form and sends the session cookie
      instead (accepted when `airflow.api.auth.backend.session` is among `[api] auth_backends`, as in
      Airflow 2's default). A refused cookie falls back to basic auth for that request; a server where
      the login form or the cookie does not work is left to basic auth for good.
    - Airflow 3 (`/api/v2/...`): exchanges the credentials at `POST {webserver_url}/auth/token` for a JWT,
      reuses it, renews it shortly before it expires and once after Airflow refuses it. A second refusal
      raises `AirflowAuthError` naming the URL and the user.

    `username` and `password` may be strings or Dagster `EnvVar`s (read when first needed).
    """

    def __init__(self, webserver_url: str, username: SecretValue, password: SecretValue) -> None:
        super().__init__(webserver_url)
        self._username_setting = username
        self._password_setting = password
        self._credentials: tuple[str, str] | None = None
        # Guards the credentials, the token, the cookie and the logins in flight. Held only to read or swap
        # them, never across a request: a login is sent without it, and concurrent requests that need one
        # wait for the login in flight (`_token_login`, `_ui_login_flight`) instead of logging in each.
        self._lock = threading.RLock()
        self._token_login: _Login | None = None
        self._ui_login_flight: _Login | None = None
        self._token: str | None = None
        #: When (by `time.time()`) the token is due for renewal; None: kept until Airflow refuses it.
        self._token_renew_at: float | None = None
        #: The last refused login at /auth/token: the stale token it was to replace, when, and the error.
        #: Requests already in flight then get the same refusal instead of each trying a login of their own
        #: (the concurrent pages of a sensor tick); a request started later tries again.
        self._refusal: tuple[str | None, float, str] | None = None
        self._cookies: dict[str, str] = {}
        self._cookie_honoured = False
        self._cookie_disabled = False
        self._login_attempts = 0
        self._login_not_before = 0.0
        self._basic_succeeded = False
        #: Counters for tests and benchmarks: logins at `/auth/token` (v2) and through the login form (v1).
        self.token_requests = 0
        self.ui_logins = 0
        #: Why the session login (Airflow 2) is not used, once it was given up; None otherwise.
        self.session_login_skipped: str | None = None

    # -- settings -------------------------------------------------------------------------------------------

    def _get_credentials(self) -> tuple[str, str]:
        with self._lock:
            if self._credentials is None:
                self._credentials = (
                    _resolve(self._username_setting, "username"),
                    _resolve(self._password_setting, "password"),
                )
            return self._credentials

    @property
    def username(self) -> str:
        """The username (not a secret; used in error messages)."""
        return self._get_credentials()[0]

    def describe_principal(self) -> str:
        try:
            return f"user {self.username!r}"
        except AirflowConfigError:
            return "the configured user"

    def __repr__(self) -> str:
        if isinstance(self._username_setting, _HasGetValue):
            user = _describe(self._username_setting)
        else:
            user = repr(self._username_setting)
        return (
            f"AirflowBasicAuthBackend(webserver_url={self.webserver_url!r}, username={user}, "
            f"password={_describe(self._password_setting)})"
        )

    # -- flows ----------------------------------------------------------------------------------------------

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        version = self.api_version_of(request)
        if version == "v2":
            yield from self._token_flow(request)
        elif version == "v1":
            yield from self._basic_flow(request)
        else:
            # Not a REST call (health, UI): nothing to add, and no reason to spend a login on it.
            yield request

    def _refused(self, request: httpx.Request, response: httpx.Response, how: str) -> AirflowAuthError:
        return AirflowAuthError(
            f"Airflow at {self.webserver_url} refused {how} for user {self.username!r} "
            f"(HTTP {response.status_code} on {request.method} {request.url.path}). Check the username and "
            "password given to airpeer and that this user may use the REST API (and has the permission for "
            "this call)."
        )

    # Airflow 3: bearer token from /auth/token.

    def _valid_token(self) -> str | None:
        with self._lock:
            if self._token is None or self._due_for_renewal(self._token):
                return None
            return self._token

    def _due_for_renewal(self, token: str) -> bool:
        """Whether `token` is expired or about to be, by its own `exp` (unknown `exp`: never)."""
        now = time.time()
        with self._lock:
            due = self._token_renew_at if token == self._token else _renewal_point(token, now)
        return due is not None and now >= due

    def _blames_the_token(self, response: httpx.Response, token: str) -> bool:
        """Whether Airflow refused a request because of its token (a new login may cure that) rather than
        because the user lacks the permission (no login can).

        Airflow 3 (3.3 checked, core code shared by every auth manager) answers 401 for a missing or expired
        token ("Token Expired"), and 403 both for a token it does not accept (garbage, revoked, signed with
        another secret: detail "Invalid JWT token") and for a user without the permission (detail
        "Forbidden"). So the rule is:

        - a 401 blames the token;
        - a 403 blames it when the token is expired or about to be by its own `exp` (Airflow's clock may
          be ahead of ours), or when Airflow's answer names the token;
        - any other 403 is a permission answer: handed to the caller as it is, at the cost of no login. N
          DAGs the user may not see cost 0 logins, not one serialised login each.
        """
        if response.status_code == 401:
            return True
        if response.status_code != 403:
            return False
        return self._due_for_renewal(token) or "token" in _error_text(response).lower()

    def _token_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        started = time.monotonic()
        token = self._valid_token()
        if token is None:
            token = yield from self._renew_token(request, stale=None, started=started)
            if token is None:
                return
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if not self._blames_the_token(response, token):
            return
        # Airflow refused a token we believed valid (revoked, server restarted with a new secret, clock
        # skew): log in again, once. The token is dropped first, so that requests starting meanwhile wait
        # for the renewal instead of sending a token Airflow refuses.
        with self._lock:
            if self._token == token:
                self._token = None
                self._token_renew_at = None
        token = yield from self._renew_token(request, stale=token, started=started)
        if token is None:
            return
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if self._blames_the_token(response, token):
            raise self._refused(request, response, "a freshly issued token")

    @contextmanager
    def _landing(self, login: _Login, slot: str) -> Iterator[None]:
        """End the login `login` however its flow ends (answer, error, or a flow closed mid-request)."""
        try:
            yield
        finally:
            with self._lock:
                if getattr(self, slot) is login:
                    setattr(self, slot, None)
            login.done.set()

    def _join_or_lead(self, slot: str) -> tuple[_Login, bool]:
        """Under the lock: the login in flight in `slot` and False (wait for it), or a new login put in the
        slot and True (this request sends it)."""
        login: _Login | None = getattr(self, slot)
        if login is not None:
            return login, False
        login = _Login()
        setattr(self, slot, login)
        return login, True

    def _wait_for(self, login: _Login, slot: str, request: httpx.Request) -> None:
        """Wait (unlocked) for another request's login; after this request's own time limit, stop waiting
        and let the next check lead a login of its own."""
        if not login.done.wait(_login_wait_seconds(request)):
            with self._lock:
                if getattr(self, slot) is login:
                    setattr(self, slot, None)

    def _renew_token(
        self, request: httpx.Request, stale: str | None, started: float
    ) -> Generator[httpx.Request, httpx.Response, str | None]:
        """A token other than `stale`: one another request just obtained, or one from a login at
        /auth/token. Concurrent requests share one login (and its refusal); none holds the lock while the
        login is on the wire.

        Returns None when the login endpoint answered with a transient failure (5xx, 429): the flow then
        ends with that response, which the instance's retry policy handles.
        """
        while True:
            with self._lock:
                current = self._valid_token()
                if current is not None and current != stale:
                    return current
                # A refused login is shared with the requests that were already under way when it was
                # refused (a request started later tries again), unless they hold a token of their own
                # other than the one that login was to replace.
                refusal = self._refusal
                if refusal is not None and refusal[1] >= started and (stale is None or refusal[0] == stale):
                    raise AirflowAuthError(refusal[2])
                # Read before taking the slot: a missing setting raises, and must not leave a login
                # "in flight" that never lands.
                username, password = self._get_credentials()
                login, lead = self._join_or_lead("_token_login")
                if lead:
                    self.token_requests += 1
            if not lead:
                self._wait_for(login, "_token_login", request)
                continue  # the token it brought, its refusal, or (after a transient failure) our own login
            with self._landing(login, "_token_login"):
                response = yield httpx.Request(
                    "POST",
                    f"{self.webserver_url}/auth/token",
                    json={"username": username, "password": password},
                    headers={"Accept": "application/json"},
                    # Same time limits as the request it serves (a request without them waits forever).
                    extensions={k: v for k, v in request.extensions.items() if k == "timeout"},
                )
                return self._take_token(response, username, stale)

    def _take_token(self, response: httpx.Response, username: str, stale: str | None) -> str | None:
        if response.status_code >= 500 or response.status_code == 429:
            return None
        if response.status_code in (*_REFUSED, 400, 422):
            message = (
                f"Airflow at {self.webserver_url} refused the login of user {username!r} at /auth/token "
                f"(HTTP {response.status_code}). Check the username and password given to airpeer."
            )
            with self._lock:
                self._refusal = (stale, time.monotonic(), message)
            raise AirflowAuthError(message)
        if response.status_code not in (200, 201):
            raise AirflowAuthError(
                f"Airflow at {self.webserver_url} answered HTTP {response.status_code} to the login of "
                f"user {username!r} at /auth/token; expected 201 with an access token."
            )
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise AirflowAuthError(
                f"Airflow at {self.webserver_url} answered the login of user {username!r} at /auth/token "
                "without an `access_token`."
            )
        with self._lock:
            self._token = token
            self._token_renew_at = _renewal_point(token, time.time())
            self._refusal = None
        return token

    # Airflow 2: basic auth, or the session cookie of a UI login.

    def _cookie_header(self) -> str | None:
        with self._lock:
            if self._cookie_disabled or not self._cookies:
                return None
            return _cookie_header(self._cookies)

    def _wants_login(self) -> bool:
        with self._lock:
            # Log in only once basic auth has worked (a one-off call pays for one password check either
            # way, and wrong credentials must not be tried on the login form).
            return (
                self._basic_succeeded
                and not self._cookie_disabled
                and not self._cookies
                and self._login_attempts < _MAX_UI_LOGINS
                and time.monotonic() >= self._login_not_before
            )

    def open_session(self, send: Callable[[httpx.Request], httpx.Response], timeout: float) -> None:
        """Airflow 2: log in through the login form now (once basic auth has worked), so that the next
        call, typically the sensor's first tick, does not pay for it. A failed login leaves basic auth."""
        if not self._wants_login():
            return
        probe = httpx.Request(
            "GET", self.webserver_url, extensions={"timeout": httpx.Timeout(timeout).as_dict()}
        )
        flow = self._ui_login(probe)
        try:
            request = next(flow)
            while True:
                response = send(request)
                response.read()
                request = flow.send(response)
        except StopIteration:
            return
        except httpx.HTTPError as exc:
            logger.debug("%s: no session login ahead of time: %s", self.webserver_url, type(exc).__name__)
        finally:
            flow.close()  # a login cut off mid-way ends here, so that others need not wait for it

    def _basic_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        want_login = self._wants_login()
        cookie = self._cookie_header()
        if cookie is None and want_login:
            cookie = yield from self._ui_login(request)
        if cookie is not None:
            request.headers["Cookie"] = cookie
            response = yield request
            # Airflow 2 answers 500 (not 401) to the session of a user deleted meanwhile, so a server error
            # on a cookie request is retried once with basic auth below: a real outage then fails the same
            # way, and a deleted user becomes a refusal (AirflowAuthError) instead of a retried "outage".
            # A 403 is Airflow 2's answer to a user without the permission (a session it does not accept
            # gets 401): the session is fine, and neither the password nor a new login would change it.
            if response.status_code != 401 and response.status_code < 500:
                with self._lock:
                    self._cookie_honoured = True
                return
            with self._lock:
                # Expired or revoked session: forget it; the next request may log in again. A cookie
                # that never worked means the API does not run the session backend: stop trying.
                if self._cookies and _cookie_header(self._cookies) == cookie:
                    self._cookies.clear()
            if response.status_code in _REFUSED and not self._cookie_honoured:
                self._give_up_login("the API refused the session cookie (session auth backend not enabled?)")
            del request.headers["Cookie"]
        username, password = self._get_credentials()
        request.headers["Authorization"] = _basic_header(username, password)
        response = yield request
        if response.status_code in _REFUSED:
            raise self._refused(request, response, "basic authentication")
        if response.status_code < 400:
            with self._lock:
                self._basic_succeeded = True

    def _back_off_login(self) -> None:
        with self._lock:
            self._login_not_before = time.monotonic() + _LOGIN_RATE_LIMIT_BACKOFF_SECONDS
            self.session_login_skipped = (
                f"the login form is rate-limited (HTTP 429); basic auth for the next "
                f"{_LOGIN_RATE_LIMIT_BACKOFF_SECONDS:.0f} s"
            )
        logger.debug("%s: %s", self.webserver_url, self.session_login_skipped)

    def _give_up_login(self, reason: str) -> None:
        with self._lock:
            self._cookie_disabled = True
            self.session_login_skipped = reason
        logger.debug("%s: using basic auth only: %s", self.webserver_url, reason)
        return None

    def _ui_login(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, str | None]:
        """Log in through Airflow 2's login form (Flask-AppBuilder) to get a session cookie.

        Airflow 2 checks the password hash on every basic-auth API request (~0.2 s here) and never hands
        out a session from the API itself; a session from the UI login is accepted by the API when
        `airflow.api.auth.backend.session` is among `[api] auth_backends`. Anything unexpected (no such
        form, a refused login, an SSO-only UI) turns this off for good and basic auth carries on.
        Returns the Cookie header to use, or None. Requests that come while a login is in flight wait for
        it (unlocked) and use its cookie, or basic auth if it brought none.
        """
        with self._lock:
            current = self._cookie_header()
            if current is not None or self._cookie_disabled:
                return current
            login, lead = self._join_or_lead("_ui_login_flight")
            if lead:
                self._login_attempts += 1
        if not lead:
            self._wait_for(login, "_ui_login_flight", request)
            return self._cookie_header()
        with self._landing(login, "_ui_login_flight"):
            return (yield from self._ui_login_requests(request))

    def _ui_login_requests(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, str | None]:
        timeout = {k: v for k, v in request.extensions.items() if k == "timeout"}
        login_url = f"{self.webserver_url}/login/"
        page = yield httpx.Request("GET", login_url, headers={"Accept": "text/html"}, extensions=timeout)
        if page.status_code == 429:
            self._back_off_login()
            return None
        if page.status_code >= 500:
            return None  # transient: try again on a later request
        csrf = _csrf_token(page.text) if page.status_code == 200 else None
        if csrf is None:
            self._give_up_login(f"no login form at /login/ (HTTP {page.status_code})")
            return None
        pre_session = _cookies_of(page)
        username, password = self._get_credentials()
        headers = {"Accept": "text/html"}
        if pre_session:
            headers["Cookie"] = _cookie_header(pre_session)
        form = httpx.Request(
            "POST",
            login_url,
            data={"username": username, "password": password, "csrf_token": csrf},
            headers=headers,
            extensions=timeout,
        )
        answer = yield form
        if answer.status_code == 429:
            # Airflow 2 limits form logins (default 5 per 40 s per client address): never compete with
            # people logging in; basic auth works meanwhile, and a later request tries again.
            self._back_off_login()
            return None
        if answer.status_code >= 500:
            return None
        location = answer.headers.get("location", "")
        session = {**pre_session, **_cookies_of(answer)}
        logged_in = (
            answer.status_code in (302, 303)
            and "/login" not in location
            and bool(session)
            and session != pre_session
        )
        if not logged_in:
            self._give_up_login(f"the login form did not log in (HTTP {answer.status_code})")
            return None
        with self._lock:
            self._cookies = session
            self.ui_logins += 1
        return _cookie_header(session)


def _error_text(response: httpx.Response) -> str:
    """The `detail` of an error answer (Airflow's JSON errors), else its text."""
    try:
        body: Any = response.json()
    except ValueError:
        return response.text
    detail = body.get("detail") if isinstance(body, dict) else None
    return detail if isinstance(detail, str) else response.text


_CSRF_INPUT = re.compile(r"<input[^>]*\bname=[\"']csrf_token[\"'][^>]*>", re.IGNORECASE)
_VALUE_ATTR = re.compile(r"\bvalue=[\"']([^\"']+)[\"']", re.IGNORECASE)


def _csrf_token(html: str) -> str | None:
    tag = _CSRF_INPUT.search(html)
    if tag is None:
        return None
    value = _VALUE_ATTR.search(tag.group(0))
    return value.group(1) if value else None


def _cookies_of(response: httpx.Response) -> dict[str, str]:
    cookies: dict[str, str] = {}
    for header in response.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(header)
        except CookieError:
            continue
        for name, morsel in jar.items():
            if morsel.value and morsel["max-age"] not in ("0", "-1"):
                cookies[name] = morsel.value
    return cookies


def _cookie_header(cookies: dict[str, str]) -> str:
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


def _basic_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
