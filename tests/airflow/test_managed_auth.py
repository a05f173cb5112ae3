"""Managed Airflow logins without the cloud: MWAA (botocore's Stubber + the MWAA login pages on an
httpx.MockTransport), Cloud Composer (google-auth credentials whose refreshes are counted) and Astronomer.

The MWAA web server here is a fake built from AWS's documented flow and its public client code: what the real
login pages answer (status, redirects, cookie attributes) is not verified (README, "Managed Airflow")."""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from airflow_fakes import dag_v1, dag_v2, json_response, make_jwt

from dagster_airpeer.airflow import (
    AirflowAstronomerAuthBackend,
    AirflowAuthError,
    AirflowComposerAuthBackend,
    AirflowConfigError,
    AirflowConnectionError,
    AirflowInstance,
    AirflowMwaaAuthBackend,
)

HAS_BOTO3 = importlib.util.find_spec("boto3") is not None
HAS_GOOGLE_AUTH = (
    importlib.util.find_spec("google") is not None and importlib.util.find_spec("google.auth") is not None
)
needs_boto3 = pytest.mark.skipif(not HAS_BOTO3, reason="the [mwaa] extra (boto3) is not installed")
needs_google_auth = pytest.mark.skipif(
    not HAS_GOOGLE_AUTH, reason="the [composer] extra (google-auth) is not installed"
)

ENV = "MyAirflowEnvironment"
HOST = "abc123-example.c4.us-east-1.airflow.amazonaws.com"
MWAA_URL = f"https://{HOST}"
WEB_TOKEN = "web-token-SECRET"
SESSION = "session-cookie-SECRET"
_TIME = "dagster_airpeer.airflow.managed.time.time"


# -- MWAA fakes ---------------------------------------------------------------------------------------------


class FakeMwaa:
    """The AWS side (a stubbed `mwaa` client issuing numbered web tokens) and the environment's web server
    (login pages that trade each token once, and the REST API)."""

    def __init__(self, version: str, *, session_max_age: int | None = 43200, jwt_ttl: float = 3600) -> None:
        import boto3
        from botocore.stub import Stubber

        self.version = version
        self.session_max_age = session_max_age
        self.jwt_ttl = jwt_ttl
        self.client = boto3.client(
            "mwaa", region_name="us-east-1", aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="x"
        )
        self.stubber = Stubber(self.client)
        self.stubber.activate()
        self.issued: list[str] = []
        self.unused: set[str] = set()
        self.login_posts: list[str] = []
        self.credentials: set[str] = set()  # sessions (v1) or JWTs (v2) the API accepts
        self.rest_calls: list[httpx.Request] = []
        self.refuse_login = False
        self.login_gate: threading.Event | None = None
        self.login_entered = threading.Event()
        self.lock = threading.Lock()

    def expect_tokens(self, n: int) -> None:
        for _ in range(n):
            token = f"{WEB_TOKEN}-{len(self.issued) + 1}"
            self.issued.append(token)
            self.unused.add(token)
            self.stubber.add_response(
                "create_web_login_token",
                {"WebToken": token, "WebServerHostname": HOST},
                {"Name": ENV},
            )

    def revoke_all(self) -> None:
        with self.lock:
            self.credentials.clear()

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path in ("/aws_mwaa/login", "/pluginsv2/aws_mwaa/login"):
            self.login_entered.set()
            if self.login_gate is not None:
                self.login_gate.wait(10)
            return self._login(request, path)
        with self.lock:
            self.rest_calls.append(request)
        if self.version == "v1":
            cookie = request.headers.get("cookie", "")
            if not any(cookie == f"session={s}" for s in self.credentials):
                return json_response(401, {"title": "Unauthorized"})
        else:
            auth = request.headers.get("authorization", "")
            if not any(auth == f"Bearer {t}" for t in self.credentials):
                return json_response(401, {"detail": "Not authenticated"})
        if path.endswith("/health"):  # behind the login, like everything on this fake web server
            if path != ("/api/v1/health" if self.version == "v1" else "/api/v2/monitor/health"):
                return json_response(404, {"detail": "Not Found"})
            return json_response(
                200, {"metadatabase": {"status": "healthy"}, "scheduler": {"status": "healthy"}}
            )
        return json_response(200, dag_v1("a") if self.version == "v1" else dag_v2("a"))

    def _login(self, request: httpx.Request, path: str) -> httpx.Response:
        token = parse_qs(request.content.decode())["token"][0]
        with self.lock:
            self.login_posts.append(path)
            fresh = token in self.unused
            self.unused.discard(token)
        expected = "/aws_mwaa/login" if self.version == "v1" else "/pluginsv2/aws_mwaa/login"
        if self.refuse_login or not fresh or path != expected:
            # Like a Flask login page: back to the login form, no session.
            return httpx.Response(302, headers={"Location": "/login/"})
        n = len(self.login_posts)
        if self.version == "v1":
            value = f"{SESSION}-{n}"
            attrs = f"; Max-Age={self.session_max_age}" if self.session_max_age is not None else ""
            cookie = f"session={value}{attrs}; Path=/; HttpOnly; Secure"
        else:
            value = make_jwt(time.time() + self.jwt_ttl, sub=f"mwaa-{n}")
            cookie = f"_token={value}; Path=/; Secure"
        with self.lock:
            self.credentials.add(value)
        return httpx.Response(302, headers={"Location": "/", "Set-Cookie": cookie})

    def backend(self, **kwargs: Any) -> AirflowMwaaAuthBackend:
        kwargs.setdefault("webserver_url", MWAA_URL)
        return AirflowMwaaAuthBackend(ENV, mwaa_client=self.client, **kwargs)

    def instance(
        self, backend: AirflowMwaaAuthBackend | None = None, detect: bool = False
    ) -> AirflowInstance:
        return AirflowInstance(
            backend or self.backend(),
            name="mwaa",
            api_version=None if detect else self.version,  # type: ignore[arg-type]
            transport=httpx.MockTransport(self.handler),
        )


@pytest.fixture
def mwaa_v1() -> Iterator[FakeMwaa]:
    if not HAS_BOTO3:
        pytest.skip("the [mwaa] extra (boto3) is not installed")
    yield FakeMwaa("v1")


@pytest.fixture
def mwaa_v2() -> Iterator[FakeMwaa]:
    if not HAS_BOTO3:
        pytest.skip("the [mwaa] extra (boto3) is not installed")
    yield FakeMwaa("v2")


def _secrets_absent(text: str, fake: FakeMwaa) -> None:
    assert WEB_TOKEN not in text and SESSION not in text
    for credential in fake.credentials:
        assert credential not in text


# -- MWAA, Airflow 2: web login token, then the session cookie --------------------------------------------------


def test_mwaa_airflow2_logs_in_once_and_sends_the_session_cookie(mwaa_v1: FakeMwaa) -> None:
    mwaa_v1.expect_tokens(1)
    backend = mwaa_v1.backend()
    instance = mwaa_v1.instance(backend)
    for _ in range(3):
        assert instance.get_dag("a").dag_id == "a"
    mwaa_v1.stubber.assert_no_pending_responses()
    assert mwaa_v1.login_posts == ["/aws_mwaa/login"]
    assert backend.logins == {"session": 1}
    last = mwaa_v1.rest_calls[-1]
    assert last.headers["cookie"] == f"session={SESSION}-1" and "authorization" not in last.headers


def test_mwaa_session_is_renewed_before_the_end_its_cookie_states(
    mwaa_v1: FakeMwaa, monkeypatch: pytest.MonkeyPatch
) -> None:
    mwaa_v1.session_max_age = 600
    mwaa_v1.expect_tokens(2)
    backend = mwaa_v1.backend()
    instance = mwaa_v1.instance(backend)
    now = time.time()
    instance.get_dag("a")
    monkeypatch.setattr(
        _TIME, lambda: now + 600 - 90
    )  # a 10-minute session is used until 60 s before its end
    instance.get_dag("a")
    assert backend.logins == {"session": 1}
    monkeypatch.setattr(_TIME, lambda: now + 600 - 30)
    instance.get_dag("a")
    instance.get_dag("a")
    assert backend.logins == {"session": 2}
    mwaa_v1.stubber.assert_no_pending_responses()  # a fresh web login token for each login


def test_mwaa_session_without_a_stated_end_is_renewed_after_max_age(
    mwaa_v1: FakeMwaa, monkeypatch: pytest.MonkeyPatch
) -> None:
    mwaa_v1.session_max_age = None
    mwaa_v1.expect_tokens(2)
    backend = mwaa_v1.backend(max_age=1800)
    instance = mwaa_v1.instance(backend)
    now = time.time()
    instance.get_dag("a")
    monkeypatch.setattr(_TIME, lambda: now + 1700)
    instance.get_dag("a")
    assert backend.logins == {"session": 1}
    monkeypatch.setattr(_TIME, lambda: now + 1801)
    instance.get_dag("a")
    assert backend.logins == {"session": 2}


def test_mwaa_refused_session_logs_in_again_once(mwaa_v1: FakeMwaa) -> None:
    mwaa_v1.expect_tokens(2)
    backend = mwaa_v1.backend()
    instance = mwaa_v1.instance(backend)
    instance.get_dag("a")
    mwaa_v1.revoke_all()  # the web server forgot the session (restart, expiry)
    assert instance.get_dag("a").dag_id == "a"
    assert backend.logins == {"session": 2}


def test_mwaa_forbidden_on_a_session_costs_no_login(mwaa_v1: FakeMwaa) -> None:
    mwaa_v1.expect_tokens(1)
    backend = mwaa_v1.backend()
    base = mwaa_v1.handler
    transport = httpx.MockTransport(
        lambda r: json_response(403, {"title": "Forbidden"}) if r.url.path.endswith("/b") else base(r)
    )
    instance = AirflowInstance(backend, name="mwaa", api_version="v1", transport=transport)
    instance.get_dag("a")
    with pytest.raises(Exception, match="403"):
        instance.get_dag("b")
    assert backend.logins == {"session": 1}


def test_mwaa_refused_login_names_the_environment_and_url_without_secrets(mwaa_v1: FakeMwaa) -> None:
    mwaa_v1.refuse_login = True
    mwaa_v1.expect_tokens(1)
    instance = mwaa_v1.instance()
    with pytest.raises(AirflowAuthError) as info:
        instance.get_dag("a")
    message = str(info.value)
    assert ENV in message and f"{MWAA_URL}/aws_mwaa/login" in message and "HTTP 302" in message
    _secrets_absent(message, mwaa_v1)


def test_mwaa_token_refused_by_aws_is_an_auth_error_naming_the_environment(mwaa_v1: FakeMwaa) -> None:
    mwaa_v1.stubber.add_client_error(
        "create_web_login_token",
        service_error_code="AccessDeniedException",
        service_message="User is not authorized to perform: airflow:CreateWebLoginToken",
        http_status_code=403,
    )
    instance = mwaa_v1.instance()
    with pytest.raises(AirflowAuthError, match=f"{ENV}.*AccessDeniedException.*CreateWebLoginToken"):
        instance.get_dag("a")
    assert mwaa_v1.login_posts == []


def test_mwaa_throttled_token_request_is_a_connection_error(mwaa_v1: FakeMwaa) -> None:
    mwaa_v1.stubber.add_client_error(
        "create_web_login_token", service_error_code="ThrottlingException", http_status_code=429
    )
    with pytest.raises(AirflowConnectionError, match=f"{ENV}.*ThrottlingException"):
        mwaa_v1.instance().get_dag("a")


def test_mwaa_concurrent_first_requests_share_one_login(mwaa_v1: FakeMwaa) -> None:
    mwaa_v1.expect_tokens(1)  # the Stubber answers once: a second create_web_login_token would fail
    backend = mwaa_v1.backend()
    instance = mwaa_v1.instance(backend)
    mwaa_v1.login_gate = threading.Event()
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def work() -> None:
        try:
            barrier.wait()
            instance.get_dag("a")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    assert mwaa_v1.login_entered.wait(10)
    mwaa_v1.login_gate.set()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert mwaa_v1.login_posts == ["/aws_mwaa/login"] and backend.logins == {"session": 1}
    assert len(mwaa_v1.rest_calls) == 8


def test_mwaa_webserver_is_found_from_the_web_login_token_which_serves_the_first_login(
    mwaa_v1: FakeMwaa,
) -> None:
    mwaa_v1.expect_tokens(1)
    backend = AirflowMwaaAuthBackend(ENV, mwaa_client=mwaa_v1.client)
    assert backend.webserver_url == MWAA_URL
    mwaa_v1.instance(backend).get_dag("a")
    mwaa_v1.stubber.assert_no_pending_responses()  # one token for both
    assert backend.logins == {"session": 1}


def test_mwaa_repr_errors_and_logs_never_show_secrets(
    mwaa_v1: FakeMwaa, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    mwaa_v1.expect_tokens(2)
    backend = mwaa_v1.backend()
    instance = mwaa_v1.instance(backend)
    instance.get_dag("a")
    mwaa_v1.revoke_all()
    instance.get_dag("a")
    for text in (repr(backend), repr(instance), caplog.text):
        _secrets_absent(text, mwaa_v1)
    assert ENV in repr(backend) and MWAA_URL in repr(backend)


# -- MWAA, Airflow 3: web login token, then the JWT -------------------------------------------------------------


def test_mwaa_airflow3_trades_the_token_for_a_jwt_sent_as_bearer(mwaa_v2: FakeMwaa) -> None:
    mwaa_v2.expect_tokens(1)
    backend = mwaa_v2.backend()
    instance = mwaa_v2.instance(backend)
    for _ in range(3):
        assert instance.get_dag("a").dag_id == "a"
    assert mwaa_v2.login_posts == ["/pluginsv2/aws_mwaa/login"] and backend.logins == {"jwt": 1}
    (jwt,) = mwaa_v2.credentials
    last = mwaa_v2.rest_calls[-1]
    assert last.headers["authorization"] == f"Bearer {jwt}" and "cookie" not in last.headers


def test_mwaa_jwt_is_renewed_shortly_before_its_exp(
    mwaa_v2: FakeMwaa, monkeypatch: pytest.MonkeyPatch
) -> None:
    mwaa_v2.expect_tokens(2)
    backend = mwaa_v2.backend()
    instance = mwaa_v2.instance(backend)
    now = time.time()
    instance.get_dag("a")
    monkeypatch.setattr(_TIME, lambda: now + 3600 - 90)
    instance.get_dag("a")
    assert backend.logins == {"jwt": 1}
    monkeypatch.setattr(_TIME, lambda: now + 3600 - 30)
    instance.get_dag("a")
    instance.get_dag("a")
    assert backend.logins == {"jwt": 2}


def test_mwaa_refused_jwt_logs_in_again_once_then_gives_up(mwaa_v2: FakeMwaa) -> None:
    mwaa_v2.expect_tokens(2)
    backend = mwaa_v2.backend()
    instance = mwaa_v2.instance(backend)
    instance.get_dag("a")
    mwaa_v2.revoke_all()
    instance.get_dag("a")
    assert backend.logins == {"jwt": 2}

    mwaa_v2.expect_tokens(1)
    base = mwaa_v2.handler
    refusing = httpx.MockTransport(
        lambda r: base(r) if "aws_mwaa" in r.url.path else json_response(401, {"detail": "Token Expired"})
    )
    instance = AirflowInstance(backend, name="mwaa", api_version="v2", transport=refusing)
    with pytest.raises(AirflowAuthError, match=f"{ENV}.*fresh login.*HTTP 401") as info:
        instance.get_dag("a")
    _secrets_absent(str(info.value), mwaa_v2)


def test_mwaa_airflow2_login_path_on_an_airflow3_environment_is_explained(mwaa_v2: FakeMwaa) -> None:
    mwaa_v2.expect_tokens(1)
    instance = AirflowInstance(
        mwaa_v2.backend(), name="mwaa", api_version="v1", transport=httpx.MockTransport(mwaa_v2.handler)
    )
    with pytest.raises(AirflowAuthError, match="Airflow 3 logs in at /pluginsv2/aws_mwaa/login"):
        instance.get_dag("a")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_mwaa_version_is_detected_when_health_needs_a_login(version: str) -> None:
    """Behind MWAA's web server the health endpoints may want a login (not known): detection then logs in,
    and a login at the other major's path (refused) does not stop it."""
    if not HAS_BOTO3:
        pytest.skip("the [mwaa] extra (boto3) is not installed")
    fake = FakeMwaa(version)
    fake.expect_tokens(2)
    instance = fake.instance(detect=True)
    assert instance.api_version == version
    assert instance.get_dag("a").dag_id == "a"


# -- MWAA settings and the extra ------------------------------------------------------------------------------


@needs_boto3
@pytest.mark.parametrize("name", ["", "1abc", "has space", "x" * 81, 3])
def test_mwaa_environment_name_is_validated(name: object) -> None:
    with pytest.raises(AirflowConfigError, match="environment_name"):
        AirflowMwaaAuthBackend(name, MWAA_URL)  # type: ignore[arg-type]


@needs_boto3
def test_mwaa_plain_http_is_refused_except_on_loopback() -> None:
    with pytest.raises(AirflowConfigError, match="https"):
        AirflowMwaaAuthBackend(ENV, f"http://{HOST}")
    AirflowMwaaAuthBackend(ENV, "http://127.0.0.1:8080")  # a port forward


def test_mwaa_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # `import boto3` now raises ImportError
    with pytest.raises(AirflowConfigError, match=r"pip install 'dagster-airpeer\[mwaa\]'"):
        AirflowMwaaAuthBackend(ENV, MWAA_URL)


# -- Cloud Composer ---------------------------------------------------------------------------------------------

COMPOSER_URL = "https://abc123-dot-us-central1.composer.googleusercontent.com"
GOOGLE_TOKEN = "ya29.google-SECRET"


def _counting_credentials(lifetime: timedelta = timedelta(hours=1), fail: str | None = None) -> Any:
    """google-auth credentials whose refresh is counted and issues numbered tokens."""
    from google.auth import credentials as ga_credentials
    from google.auth import exceptions

    class CountingCredentials(ga_credentials.Credentials):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.refreshes = 0

        def refresh(self, request: Any) -> None:
            if fail == "refused":
                raise exceptions.RefreshError("invalid_grant: secret-bearing details")
            if fail == "unreachable":
                raise exceptions.TransportError("connection refused")
            self.refreshes += 1
            self.token = f"{GOOGLE_TOKEN}-{self.refreshes}"
            # google-auth keeps expiry naive, in UTC.
            self.expiry = datetime.now(timezone.utc).replace(tzinfo=None) + lifetime

    return CountingCredentials()


class FakeComposer:
    def __init__(self, version: str = "v1") -> None:
        self.version = version
        self.accepted: set[str] = set()
        self.requests: list[httpx.Request] = []
        self.accept_all = True
        self.gate: threading.Event | None = None

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        auth = request.headers.get("authorization", "")
        if not auth.startswith(f"Bearer {GOOGLE_TOKEN}") or (
            auth[7:] not in self.accepted and not self.accept_all
        ):
            return json_response(401, {"detail": "Unauthorized"})
        return json_response(200, dag_v1("a") if self.version == "v1" else dag_v2("a"))

    def instance(self, backend: AirflowComposerAuthBackend) -> AirflowInstance:
        return AirflowInstance(
            backend,
            name="composer",
            api_version=self.version,  # type: ignore[arg-type]
            transport=httpx.MockTransport(self.handler),
        )


@needs_google_auth
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_composer_sends_refreshed_credentials_as_bearer(version: str) -> None:
    credentials = _counting_credentials()
    fake = FakeComposer(version)
    backend = AirflowComposerAuthBackend(COMPOSER_URL, credentials)
    instance = fake.instance(backend)
    for _ in range(3):
        assert instance.get_dag("a").dag_id == "a"
    assert credentials.refreshes == 1
    assert fake.requests[-1].headers["authorization"] == f"Bearer {GOOGLE_TOKEN}-1"


@needs_google_auth
def test_composer_valid_given_credentials_are_used_without_a_refresh() -> None:
    from google.oauth2.credentials import Credentials

    credentials = Credentials(
        token=f"{GOOGLE_TOKEN}-given",
        expiry=datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(hours=1),
    )
    fake = FakeComposer()
    fake.instance(AirflowComposerAuthBackend(COMPOSER_URL, credentials)).get_dag("a")
    assert fake.requests[-1].headers["authorization"] == f"Bearer {GOOGLE_TOKEN}-given"


@needs_google_auth
def test_composer_token_is_refreshed_before_its_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    credentials = _counting_credentials()
    fake = FakeComposer()
    instance = fake.instance(AirflowComposerAuthBackend(COMPOSER_URL, credentials))
    now = time.time()
    instance.get_dag("a")
    monkeypatch.setattr(_TIME, lambda: now + 3600 - 90)
    instance.get_dag("a")
    assert credentials.refreshes == 1
    monkeypatch.setattr(_TIME, lambda: now + 3600 - 30)  # within the last minute of an hour's token
    instance.get_dag("a")
    instance.get_dag("a")
    assert credentials.refreshes == 2
    assert fake.requests[-1].headers["authorization"] == f"Bearer {GOOGLE_TOKEN}-2"


@needs_google_auth
def test_composer_refused_token_is_refreshed_once_then_an_auth_error() -> None:
    credentials = _counting_credentials()
    fake = FakeComposer()
    backend = AirflowComposerAuthBackend(COMPOSER_URL, credentials)
    instance = fake.instance(backend)
    instance.get_dag("a")
    fake.accept_all = False
    fake.accepted = {f"{GOOGLE_TOKEN}-2"}  # the server wants a newer token (a revoked one)
    instance.get_dag("a")
    assert credentials.refreshes == 2
    fake.accepted = set()
    with pytest.raises(AirflowAuthError, match=f"Cloud Composer.*{COMPOSER_URL}.*HTTP 401") as info:
        instance.get_dag("a")
    assert GOOGLE_TOKEN not in str(info.value) and GOOGLE_TOKEN not in repr(backend)


@needs_google_auth
def test_composer_refresh_error_is_an_auth_error_without_its_details() -> None:
    fake = FakeComposer()
    instance = fake.instance(AirflowComposerAuthBackend(COMPOSER_URL, _counting_credentials(fail="refused")))
    with pytest.raises(AirflowAuthError, match="could not be refreshed") as info:
        instance.get_dag("a")
    assert "secret-bearing" not in str(info.value) and info.value.__cause__ is None
    assert fake.requests == []


@needs_google_auth
def test_composer_unreachable_token_endpoint_is_a_connection_error() -> None:
    fake = FakeComposer()
    instance = fake.instance(
        AirflowComposerAuthBackend(COMPOSER_URL, _counting_credentials(fail="unreachable"))
    )
    with pytest.raises(AirflowConnectionError, match="refresh the credentials"):
        instance.get_dag("a")


@needs_google_auth
def test_composer_default_credentials_are_asked_with_the_cloud_platform_scope(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import google.auth

    asked: list[Any] = []
    credentials = _counting_credentials()

    def fake_default(scopes: Any = None, **kwargs: Any) -> tuple[Any, str]:
        asked.append(scopes)
        return credentials, "my-project"

    monkeypatch.setattr(google.auth, "default", fake_default)
    backend = AirflowComposerAuthBackend(COMPOSER_URL)
    FakeComposer().instance(backend).get_dag("a")
    assert asked == [["https://www.googleapis.com/auth/cloud-platform"]]
    assert "google.auth.default()" in repr(backend)


@needs_google_auth
def test_composer_concurrent_requests_share_one_refresh() -> None:
    credentials = _counting_credentials()
    release = threading.Event()
    refresh = credentials.refresh

    def slow_refresh(request: Any) -> None:
        release.wait(10)
        refresh(request)

    credentials.refresh = slow_refresh
    fake = FakeComposer()
    instance = fake.instance(AirflowComposerAuthBackend(COMPOSER_URL, credentials))
    errors: list[BaseException] = []

    def work() -> None:
        try:
            instance.get_dag("a")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    release.set()
    for t in threads:
        t.join(timeout=30)
    assert not errors and credentials.refreshes == 1 and len(fake.requests) == 6


def test_composer_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "google.auth.transport.requests", None)
    with pytest.raises(AirflowConfigError, match=r"pip install 'dagster-airpeer\[composer\]'"):
        AirflowComposerAuthBackend(COMPOSER_URL)


@needs_google_auth
def test_composer_plain_http_is_refused() -> None:
    with pytest.raises(AirflowConfigError, match="https"):
        AirflowComposerAuthBackend("http://composer.example.com")


# -- Astronomer -------------------------------------------------------------------------------------------------

ASTRO_URL = "https://clmkpsyfc010391lb5fw0b3ki.astronomer.run/d1a2b3c4"
ASTRO_TOKEN = "astro-api-token-SECRET"


def _astro(token: str, status: int = 200) -> tuple[AirflowInstance, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if status != 200:
            return json_response(status, {"detail": "Invalid JWT token"})
        return json_response(200, dag_v2("a"))

    backend = AirflowAstronomerAuthBackend(ASTRO_URL, token)
    return AirflowInstance(
        backend, name="astro", api_version="v2", transport=httpx.MockTransport(handler)
    ), seen


def test_astronomer_token_is_sent_as_bearer_under_the_deployment_path() -> None:
    instance, seen = _astro(ASTRO_TOKEN)
    assert instance.get_dag("a").dag_id == "a"
    assert seen[0].headers["authorization"] == f"Bearer {ASTRO_TOKEN}"
    assert seen[0].url.path == "/d1a2b3c4/api/v2/dags/a"
    assert ASTRO_TOKEN not in repr(instance.auth_backend) and ASTRO_URL in repr(instance.auth_backend)


def test_astronomer_refusal_names_the_deployment_without_the_token() -> None:
    instance, _ = _astro(ASTRO_TOKEN, status=403)
    with pytest.raises(AirflowAuthError, match=f"Astronomer deployment at {ASTRO_URL}") as info:
        instance.get_dag("a")
    assert ASTRO_TOKEN not in str(info.value)


def test_astronomer_expired_jwt_is_refused_before_it_is_sent() -> None:
    token = make_jwt(time.time() - 60)
    instance, seen = _astro(token)
    with pytest.raises(AirflowAuthError, match=r"expired at .*API Tokens") as info:
        instance.get_dag("a")
    assert seen == [] and token not in str(info.value)


def test_astronomer_plain_http_is_refused() -> None:
    with pytest.raises(AirflowConfigError, match="https"):
        AirflowAstronomerAuthBackend("http://deployment.astronomer.run/x", ASTRO_TOKEN)


def test_the_base_install_imports_neither_boto3_nor_google_auth() -> None:
    """The extras stay optional: importing the managed backends loads neither (a fresh interpreter, with the
    top-level package stubbed so that Dagster's import time is not paid: airflow/ needs no Dagster)."""
    src = Path(__file__).resolve().parents[2] / "src" / "dagster_airpeer"
    code = (
        "import sys, types\n"
        f"pkg = types.ModuleType('dagster_airpeer'); pkg.__path__ = [{str(src)!r}]\n"
        "sys.modules['dagster_airpeer'] = pkg\n"
        "import dagster_airpeer.airflow.managed\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 'dagster') "
        "or m.startswith(('google.auth', 'google.oauth2')))\n"
        "print(loaded)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout
