"""Auth backends: token logins and renewals (v2), basic auth and the session cookie (v1), secrets hidden."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from airflow_fakes import URL, FakeAirflow, dag_v1, dag_v2, json_response, make_instance, make_jwt

from dagster_airpeer.airflow import (
    AirflowAuthError,
    AirflowBasicAuthBackend,
    AirflowConfigError,
    AirflowConnectionError,
    AirflowInstance,
    AirflowTokenAuthBackend,
)
from dagster_airpeer.airflow.auth import _jwt_expiry, _renew_margin, _token_lifetime

PASSWORD = "s3cret-pw"


def _v2_with_dag() -> FakeAirflow:
    fake = FakeAirflow("v2", password=PASSWORD)
    fake.add("GET", "/api/v2/dags/a", lambda r: json_response(200, dag_v2("a")))
    return fake


def _v1_with_dag(**kwargs: object) -> FakeAirflow:
    fake = FakeAirflow("v1", password=PASSWORD, **kwargs)  # type: ignore[arg-type]
    fake.add("GET", "/api/v1/dags/a", lambda r: json_response(200, dag_v1("a")))
    return fake


# -- settings ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["localhost:8080", "ftp://host", "http://", "", "http://u:p@host:8080"])
def test_webserver_url_is_validated(bad: str) -> None:
    with pytest.raises(AirflowConfigError, match="webserver_url"):
        AirflowBasicAuthBackend(bad, "admin", "admin")


def test_webserver_url_loses_trailing_slash() -> None:
    assert AirflowTokenAuthBackend("https://af.example.com/airflow/", "t").webserver_url == (
        "https://af.example.com/airflow"
    )


def test_reprs_never_show_secrets() -> None:
    basic = AirflowBasicAuthBackend(URL, "admin", PASSWORD)
    token = AirflowTokenAuthBackend(URL, "tok-ABCDEF-123")
    instance = AirflowInstance(basic, name="x")
    for obj in (basic, token, instance):
        text = repr(obj)
        assert PASSWORD not in text and "tok-ABCDEF-123" not in text
    assert "admin" in repr(basic) and URL in repr(basic)


def test_env_var_values_are_read_and_missing_ones_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster import EnvVar

    monkeypatch.setenv("AIRPEER_TEST_USER", "admin")
    monkeypatch.setenv("AIRPEER_TEST_PASSWORD", PASSWORD)
    fake = _v2_with_dag()
    backend = AirflowBasicAuthBackend(URL, EnvVar("AIRPEER_TEST_USER"), EnvVar("AIRPEER_TEST_PASSWORD"))
    assert PASSWORD not in repr(backend) and "AIRPEER_TEST_PASSWORD" in repr(backend)
    instance = AirflowInstance(backend, name="x", transport=fake.transport())
    assert instance.get_dag("a").dag_id == "a"

    monkeypatch.delenv("AIRPEER_TEST_PASSWORD")
    backend = AirflowBasicAuthBackend(URL, EnvVar("AIRPEER_TEST_USER"), EnvVar("AIRPEER_TEST_PASSWORD"))
    instance = AirflowInstance(backend, name="x", transport=fake.transport())
    with pytest.raises(AirflowConfigError, match="AIRPEER_TEST_PASSWORD"):
        instance.get_dag("a")


def test_jwt_expiry_is_read_without_verifying() -> None:
    assert _jwt_expiry(make_jwt(1_900_000_000)) == 1_900_000_000
    assert _jwt_expiry("not-a-jwt") is None
    assert _jwt_expiry("a.!!!.c") is None
    assert _jwt_expiry(make_jwt(None)) is None


# -- Airflow 3: bearer tokens -------------------------------------------------------------------------------------


def test_token_is_fetched_once_and_reused() -> None:
    fake = _v2_with_dag()
    instance = make_instance(fake)
    for _ in range(3):
        instance.get_dag("a")
    assert fake.logins == 1
    login = next(r for r in fake.requests if r.url.path == "/auth/token")
    assert login.method == "POST"
    assert login.headers["content-type"] == "application/json"
    dag_requests = fake.api("GET", "/dags/a")
    assert {r.headers["authorization"] for r in dag_requests} == {f"Bearer {fake.issued[0]}"}


def test_health_checks_need_no_login() -> None:
    fake = _v2_with_dag()
    instance = make_instance(fake)
    assert instance.api_version == "v2"
    assert fake.logins == 0
    assert all("authorization" not in r.headers for r in fake.requests)


def test_token_is_renewed_shortly_before_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _v2_with_dag()
    instance = make_instance(fake)
    instance.get_dag("a")
    now = time.time()
    monkeypatch.setattr("dagster_airpeer.airflow.auth.time.time", lambda: now + 3600 - 90)
    instance.get_dag("a")
    assert fake.logins == 1
    monkeypatch.setattr("dagster_airpeer.airflow.auth.time.time", lambda: now + 3600 - 30)
    instance.get_dag("a")  # within a minute of its end (1 h lifetime): renewed
    instance.get_dag("a")
    assert fake.logins == 2


@pytest.mark.parametrize("ttl", [60, 30, 5])
def test_short_lived_tokens_serve_many_requests(ttl: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A token that lives a minute or less is used for most of its life, not renewed on every request
    (#13.11: the margin is relative to the lifetime); it is still renewed shortly before its end."""
    fake = _v2_with_dag()
    fake.token_ttl = ttl
    instance = make_instance(fake)
    issued = time.time()
    monkeypatch.setattr("dagster_airpeer.airflow.auth.time.time", lambda: issued)
    for _ in range(5):
        instance.get_dag("a")
    assert fake.logins == 1
    # Near its end (within a tenth of its life, at least a second, at most half of it): renewed.
    monkeypatch.setattr("dagster_airpeer.airflow.auth.time.time", lambda: issued + ttl - 0.45 * ttl)
    instance.get_dag("a")
    assert fake.logins == 1
    monkeypatch.setattr("dagster_airpeer.airflow.auth.time.time", lambda: issued + ttl - min(0.5, ttl / 20))
    instance.get_dag("a")
    assert fake.logins == 2


@pytest.mark.parametrize(
    ("lifetime", "margin"),
    [(86400, 60), (3600, 60), (600, 60), (60, 6), (30, 3), (5, 1), (1, 0.5), (None, 60)],
)
def test_renew_margin_is_relative_to_the_lifetime(lifetime: float | None, margin: float) -> None:
    assert _renew_margin(lifetime) == pytest.approx(margin)


def test_token_lifetime_is_read_from_its_claims() -> None:
    now = time.time()
    assert _token_lifetime(make_jwt(now + 30), received_at=now + 5) == pytest.approx(30, abs=1)  # exp - iat
    no_iat = _jwt_without_iat(now + 20)
    assert _token_lifetime(no_iat, received_at=now) == pytest.approx(20, abs=1)  # exp - arrival
    assert _token_lifetime("not-a-jwt", received_at=now) is None


def _jwt_without_iat(exp: float) -> str:
    import base64
    import json

    def b64(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'HS512'})}.{b64({'sub': 'admin', 'exp': int(exp)})}.c2ln"


@pytest.mark.parametrize("status", [401, 403])
def test_refused_token_is_renewed_once(status: int) -> None:
    fake = _v2_with_dag()
    instance = make_instance(fake)
    instance.get_dag("a")
    # Airflow forgets the token (restarted with another secret, say).
    fake.valid_tokens.clear()
    if status == 401:
        original = fake._check_auth

        def refuse_401(request: httpx.Request) -> httpx.Response | None:
            result = original(request)
            return json_response(401, {"detail": "expired"}) if result is not None else None

        fake._check_auth = refuse_401  # type: ignore[method-assign]
    assert instance.get_dag("a").dag_id == "a"
    assert fake.logins == 2


def test_second_refusal_raises_auth_error_without_secrets() -> None:
    fake = _v2_with_dag()
    fake._check_auth = lambda request: json_response(403, {"detail": "Invalid JWT token"})  # type: ignore[method-assign]
    instance = make_instance(fake)
    with pytest.raises(AirflowAuthError) as info:
        instance.get_dag("a")
    message = str(info.value)
    assert URL in message and "'admin'" in message
    assert PASSWORD not in message
    assert all(token not in message for token in fake.issued)
    # One login for the first attempt, one renewal: never a loop.
    assert fake.logins == 2


def test_wrong_password_fails_at_login_once() -> None:
    fake = _v2_with_dag()
    instance = AirflowInstance(
        AirflowBasicAuthBackend(URL, "admin", "wrong-password"), name="x", transport=fake.transport()
    )
    with pytest.raises(AirflowAuthError, match="refused the login of user 'admin'") as info:
        instance.get_dag("a")
    assert "wrong-password" not in str(info.value)
    assert fake.logins == 1


def test_concurrent_first_requests_log_in_once() -> None:
    fake = _v2_with_dag()
    instance = make_instance(fake)
    instance.api_version  # noqa: B018
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait()
            instance.get_dag("a")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert fake.logins == 1


def test_login_5xx_is_retried() -> None:
    fake = _v2_with_dag()
    original = fake.routes[("POST", "/auth/token")]
    calls = {"n": 0}

    def flaky(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            return json_response(503, {"detail": "starting"})
        return original(request)

    fake.add("POST", "/auth/token", flaky)
    instance = make_instance(fake)
    assert instance.get_dag("a").dag_id == "a"
    assert calls["n"] == 2


# -- static token -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_static_token_on_both_versions(version: str) -> None:
    fake = FakeAirflow(version)
    fake.valid_tokens.add("static-token-1")
    fake.add(
        "GET",
        f"/api/{version}/dags/a",
        lambda r: json_response(200, dag_v2("a") if version == "v2" else dag_v1("a")),
    )
    instance = AirflowInstance(
        AirflowTokenAuthBackend(URL, "static-token-1"), name="x", transport=fake.transport()
    )
    assert instance.get_dag("a").dag_id == "a"
    assert fake.api("GET", "/dags/a")[0].headers["authorization"] == "Bearer static-token-1"

    fake.valid_tokens.clear()
    with pytest.raises(AirflowAuthError) as info:
        instance.get_dag("a")
    assert "static-token-1" not in str(info.value)
    assert fake.logins == 0


# -- Airflow 2: basic auth and the session cookie ---------------------------------------------------------------


def test_basic_auth_on_v1_without_a_login_form() -> None:
    fake = _v1_with_dag()
    instance = make_instance(fake)
    for _ in range(3):
        instance.get_dag("a")
    sent = fake.api("GET", "/dags/a")
    assert len(sent) == 3
    assert all(r.headers["authorization"].startswith("Basic ") for r in sent)
    assert all("cookie" not in r.headers for r in sent)
    # The login form was looked for once (404), then never again.
    assert [r.url.path for r in fake.requests].count("/login/") == 1


def test_session_cookie_from_ui_login_replaces_the_password() -> None:
    fake = _v1_with_dag(ui_login=True)
    instance = make_instance(fake)
    for _ in range(4):
        instance.get_dag("a")
    first, *later = fake.api("GET", "/dags/a")
    assert first.headers["authorization"].startswith("Basic ")
    assert len(later) == 3
    for request in later:
        assert "authorization" not in request.headers
        assert request.headers["cookie"] == "session=sess0"
    assert fake.form_logins == 1
    post = next(r for r in fake.requests if r.method == "POST" and r.url.path == "/login/")
    assert post.headers["cookie"] == "session=pre-login"
    assert instance.auth_backend.ui_logins == 1  # type: ignore[attr-defined]


def test_refused_cookie_falls_back_to_basic_then_logs_in_again() -> None:
    fake = _v1_with_dag(ui_login=True)
    instance = make_instance(fake)
    instance.get_dag("a")
    instance.get_dag("a")  # logs in, uses the cookie
    fake.sessions.clear()  # the session expired server-side
    assert instance.get_dag("a").dag_id == "a"
    instance.get_dag("a")
    sent = fake.api("GET", "/dags/a")
    # 3rd call: cookie refused, then basic; 4th: a new login and its cookie.
    assert sent[2].headers["cookie"] == "session=sess0" and "authorization" not in sent[2].headers
    assert sent[3].headers["authorization"].startswith("Basic ")
    assert sent[4].headers["cookie"] == "session=sess1" and "authorization" not in sent[4].headers
    assert fake.form_logins == 2


def test_cookie_never_honoured_is_given_up() -> None:
    fake = _v1_with_dag(ui_login=True)
    # The API does not run the session backend: only basic auth counts.
    original = fake._check_auth

    def basic_only(request: httpx.Request) -> httpx.Response | None:
        if "authorization" not in request.headers:
            return json_response(401, {"detail": "Unauthorized"})
        return original(request)

    fake._check_auth = basic_only  # type: ignore[method-assign]
    instance = make_instance(fake)
    for _ in range(4):
        instance.get_dag("a")
    sent = fake.api("GET", "/dags/a")
    # basic; cookie (refused) + basic; then basic only.
    assert ["authorization" in r.headers for r in sent] == [True, False, True, True, True]
    assert fake.form_logins == 1


def test_refused_form_login_leaves_basic_auth() -> None:
    fake = _v1_with_dag(ui_login=True)
    instance = make_instance(fake)
    instance.get_dag("a")
    fake.password = "changed-pw"  # the form refuses now, basic auth too
    with pytest.raises(AirflowAuthError):
        instance.get_dag("a")
    fake.password = PASSWORD
    instance.get_dag("a")
    assert fake.form_logins == 1
    assert all("authorization" in r.headers for r in fake.api("GET", "/dags/a"))


def test_rate_limited_login_form_is_left_alone() -> None:
    fake = _v1_with_dag(ui_login=True)
    fake.add("POST", "/login/", lambda r: httpx.Response(429, text="Too Many Requests"))
    instance = make_instance(fake)
    for _ in range(4):
        instance.get_dag("a")
    backend = instance.auth_backend
    assert isinstance(backend, AirflowBasicAuthBackend)
    assert backend.session_login_skipped is not None and "429" in backend.session_login_skipped
    assert [r.url.path for r in fake.requests].count("/login/") == 2  # one GET, one POST, never again
    assert all("authorization" in r.headers for r in fake.api("GET", "/dags/a"))


def test_rate_limited_login_form_is_tried_again_after_the_back_off() -> None:
    fake = _v1_with_dag(ui_login=True)
    refuse = {"on": True}
    original = fake.routes[("POST", "/login/")]
    fake.add("POST", "/login/", lambda r: httpx.Response(429) if refuse["on"] else original(r))
    instance = make_instance(fake)
    instance.get_dag("a")
    instance.get_dag("a")  # the login is refused (429): basic auth
    backend = instance.auth_backend
    assert isinstance(backend, AirflowBasicAuthBackend) and backend.ui_logins == 0
    refuse["on"] = False
    backend._login_not_before = 0.0  # the back-off has passed
    instance.get_dag("a")
    instance.get_dag("a")
    assert backend.ui_logins == 1
    assert fake.api("GET", "/dags/a")[-1].headers["cookie"].startswith("session=")


def test_open_session_logs_in_ahead_of_the_next_call() -> None:
    """Definitions open the session after loading, so the sensor's first tick does not pay for the login."""
    fake = _v1_with_dag(ui_login=True)
    instance = make_instance(fake)
    instance.open_session()  # basic auth has not worked yet: nothing is tried on the login form
    assert fake.form_logins == 0
    instance.get_dag("a")
    instance.open_session()
    assert fake.form_logins == 1
    logins = [r for r in fake.requests if r.url.path == "/login/"]
    instance.get_dag("a")
    assert [r for r in fake.requests if r.url.path == "/login/"] == logins  # no login in the call itself
    assert fake.api("GET", "/dags/a")[-1].headers["cookie"] == "session=sess0"
    instance.open_session()  # already logged in: nothing to do
    assert fake.form_logins == 1


def test_open_session_cut_off_raises_nothing_and_releases_the_backend() -> None:
    fake = _v1_with_dag(ui_login=True)

    def cut(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("connection reset", request=request)

    fake.add("POST", "/login/", cut)
    instance = make_instance(fake)
    instance.get_dag("a")
    instance.open_session()  # best effort: no exception
    # Another thread can still authenticate (the login's lock was released).
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(instance.get_dag, "a").result(timeout=10).dag_id == "a"


def test_wrong_credentials_are_never_tried_on_the_login_form() -> None:
    fake = _v1_with_dag(ui_login=True)
    instance = AirflowInstance(
        AirflowBasicAuthBackend(URL, "admin", "wrong-password"), name="x", transport=fake.transport()
    )
    for _ in range(2):
        with pytest.raises(AirflowAuthError):
            instance.get_dag("a")
    assert "/login/" not in [r.url.path for r in fake.requests]


def test_wrong_basic_password_raises_auth_error_without_it() -> None:
    fake = _v1_with_dag()
    instance = AirflowInstance(
        AirflowBasicAuthBackend(URL, "admin", "wrong-password"), name="x", transport=fake.transport()
    )
    with pytest.raises(AirflowAuthError) as info:
        instance.get_dag("a")
    message = str(info.value)
    assert "'admin'" in message and URL in message and "wrong-password" not in message
    assert len(fake.api("GET", "/dags/a")) == 1


def test_token_expiry_margin_uses_wall_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _v2_with_dag()
    instance = make_instance(fake)
    instance.get_dag("a")
    later = time.time() + 3600
    monkeypatch.setattr("dagster_airpeer.airflow.auth.time.time", lambda: later)
    instance.get_dag("a")
    assert fake.logins == 2


# -- no lock across a login (#13.9) -------------------------------------------------------------------------------


def _blocking_login(fake: FakeAirflow, method: str, path: str) -> tuple[threading.Event, threading.Event]:
    """Make the login route wait: returns (started, release)."""
    started, release = threading.Event(), threading.Event()
    original = fake.routes[(method, path)]

    def blocking(request: httpx.Request) -> httpx.Response:
        started.set()
        assert release.wait(30), "the test never released the login"
        return original(request)

    fake.add(method, path, blocking)
    return started, release


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_no_lock_is_held_while_a_login_is_in_flight(version: str) -> None:
    """While the login request is on the wire, the backend stays usable from other threads."""
    if version == "v2":
        fake = _v2_with_dag()
        started, release = _blocking_login(fake, "POST", "/auth/token")
    else:
        fake = _v1_with_dag(ui_login=True)
        started, release = _blocking_login(fake, "POST", "/login/")
    instance = make_instance(fake)
    backend = instance.auth_backend
    assert isinstance(backend, AirflowBasicAuthBackend)
    if version == "v1":
        instance.get_dag("a")  # basic auth works: the next call logs in through the form
    with ThreadPoolExecutor(2) as pool:
        call = pool.submit(instance.get_dag, "a")
        assert started.wait(30)
        # Anything that takes the backend's lock (here: reading the username) must not wait for the login.
        other = pool.submit(backend.describe_principal)
        try:
            assert other.result(timeout=10) == "user 'admin'"
        finally:
            release.set()
        assert call.result(timeout=30).dag_id == "a"
    assert (fake.logins if version == "v2" else fake.form_logins) == 1


def test_login_cut_off_lets_another_request_log_in() -> None:
    """A login whose connection breaks ends at once; a request that waited for it logs in itself."""
    fake = _v2_with_dag()
    original = fake.routes[("POST", "/auth/token")]
    first_started, waiter_started = threading.Event(), threading.Event()
    calls = {"n": 0}

    def cut_first(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            first_started.set()
            assert waiter_started.wait(30)
            raise httpx.ConnectError("connection reset", request=request)
        return original(request)

    fake.add("POST", "/auth/token", cut_first)
    instance = make_instance(fake, max_retries=0)

    def waiter() -> str:
        waiter_started.set()
        return instance.get_dag("a").dag_id

    with ThreadPoolExecutor(2) as pool:
        failing = pool.submit(instance.get_dag, "a")
        assert first_started.wait(30)
        second = pool.submit(waiter)
        assert second.result(timeout=30) == "a"
        with pytest.raises(AirflowConnectionError):
            failing.result(timeout=30)
    assert calls["n"] == 2  # the cut login, then the waiting request's own


def test_a_login_flow_dropped_without_closing_does_not_block_others() -> None:
    """A caller that abandons the flow mid-login (never closes the generator) blocks nobody for good: the
    others wait at most their own request's time limit for that login, then log in themselves."""
    fake = _v2_with_dag()
    backend = AirflowBasicAuthBackend(URL, "admin", PASSWORD)
    short = {"timeout": httpx.Timeout(0.2).as_dict()}
    dropped = backend.sync_auth_flow(httpx.Request("GET", f"{URL}/api/v2/dags/a", extensions=short))
    login = next(dropped)
    assert login.url.path == "/auth/token"  # the login is "in flight" and stays so

    def other() -> int:
        with httpx.Client(transport=fake.transport()) as client:
            request = client.build_request("GET", f"{URL}/api/v2/dags/a", extensions=short)
            return client.send(request, auth=backend).status_code

    pool = ThreadPoolExecutor(1)
    try:
        assert pool.submit(other).result(timeout=30) == 200
    finally:
        dropped.close()
        pool.shutdown()
    assert fake.logins == 1


# -- a 403 for a missing permission is no reason to log in (#13.10) ---------------------------------------------


def _forbidden(status: int = 403, detail: str = "Forbidden") -> httpx.Response:
    return json_response(status, {"detail": detail})


def test_forbidden_items_cost_no_login() -> None:
    """Airflow 3 answers 403 "Forbidden" for a DAG the user may not see: a new token would not change
    that, so N forbidden DAGs cost 0 logins (not one serialised login each)."""
    fake = _v2_with_dag()
    for i in range(5):
        fake.add("GET", f"/api/v2/dags/secret{i}", lambda r: _forbidden())
    instance = make_instance(fake)
    instance.get_dag("a")
    for i in range(5):
        with pytest.raises(AirflowAuthError, match="403") as info:
            instance.get_dag(f"secret{i}")
        assert PASSWORD not in str(info.value)
    assert instance.get_dag("a").dag_id == "a"
    assert fake.logins == 1
    assert len(fake.api("GET", "/dags/secret0")) == 1  # no retry either


def test_forbidden_with_a_token_past_its_renewal_point_is_renewed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 403 while the token's own `exp` says it is (about to be) expired blames the token: one login."""
    fake = _v2_with_dag()
    instance = make_instance(fake)
    instance.get_dag("a")
    later = time.time() + 7200  # the token (1 h) expired while the request was on its way

    def expire_then_forbid(request: httpx.Request) -> httpx.Response:
        if request.headers["authorization"] == f"Bearer {fake.issued[0]}":
            monkeypatch.setattr("dagster_airpeer.airflow.auth.time.time", lambda: later)
            return _forbidden()
        return json_response(200, dag_v2("b"))

    fake.add("GET", "/api/v2/dags/b", expire_then_forbid)
    assert instance.get_dag("b").dag_id == "b"
    assert fake.logins == 2


def test_forbidden_after_a_renewal_is_handed_on_without_another_login() -> None:
    """A token refused as invalid is renewed once; if the new token then meets a permission 403, that
    answer is the caller's (no second login, no loop)."""
    fake = _v2_with_dag()
    instance = make_instance(fake)
    instance.get_dag("a")

    def invalid_then_forbidden(request: httpx.Request) -> httpx.Response:
        if request.headers["authorization"] == f"Bearer {fake.issued[0]}":
            return _forbidden(detail="Invalid JWT token")
        return _forbidden()

    fake.add("GET", "/api/v2/dags/b", invalid_then_forbidden)
    with pytest.raises(AirflowAuthError, match="403"):
        instance.get_dag("b")
    assert fake.logins == 2


def test_airflow2_forbidden_with_a_session_keeps_the_session() -> None:
    """Airflow 2 answers 401 to a session it does not accept and 403 to a user without the permission: a
    403 on a cookie request neither drops the session nor falls back to the password."""
    fake = _v1_with_dag(ui_login=True)
    for i in range(4):
        fake.add("GET", f"/api/v1/dags/secret{i}", lambda r: _forbidden())
    instance = make_instance(fake)
    instance.get_dag("a")
    instance.get_dag("a")  # logged in through the form
    for i in range(4):
        with pytest.raises(AirflowAuthError, match="403"):
            instance.get_dag(f"secret{i}")
    instance.get_dag("a")
    assert fake.form_logins == 1
    later = [r for r in fake.requests if r.url.path.startswith("/api/v1/dags/")][2:]
    assert all("authorization" not in r.headers for r in later), "no basic-auth fallback"
    assert all(r.headers["cookie"] == "session=sess0" for r in later)


def test_requests_starting_during_a_renewal_wait_for_it() -> None:
    """Once Airflow refused the token, requests that start while the renewal is in flight wait for the new
    token instead of sending the refused one (one refusal, one login)."""
    fake = _v2_with_dag()
    instance = make_instance(fake)
    instance.get_dag("a")
    refused = fake.issued[0]
    fake.valid_tokens.clear()  # revoked
    started, release = _blocking_login(fake, "POST", "/auth/token")
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(instance.get_dag, "a")
        assert started.wait(30)  # refused, renewing
        backend = instance.auth_backend
        assert isinstance(backend, AirflowBasicAuthBackend)
        in_flight = backend._token_login
        assert in_flight is not None
        waiting = threading.Event()

        class Watched(threading.Event):
            def wait(self, timeout: float | None = None) -> bool:
                waiting.set()
                return super().wait(timeout)

        in_flight.done = Watched()
        second = pool.submit(instance.get_dag, "a")
        try:
            assert waiting.wait(30)  # the second call waits for the renewal
        finally:
            release.set()
        assert first.result(timeout=30).dag_id == second.result(timeout=30).dag_id == "a"
    sent_with_refused = [
        r for r in fake.api("GET", "/dags/a") if r.headers["authorization"] == f"Bearer {refused}"
    ]
    assert len(sent_with_refused) == 2  # the first call, and the one Airflow refused
    assert fake.logins == 2


def test_a_missing_password_setting_leaves_no_login_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster import EnvVar

    monkeypatch.delenv("AIRPEER_TEST_PASSWORD", raising=False)
    fake = _v2_with_dag()
    backend = AirflowBasicAuthBackend(URL, "admin", EnvVar("AIRPEER_TEST_PASSWORD"))
    instance = AirflowInstance(backend, name="x", transport=fake.transport())
    with pytest.raises(AirflowConfigError, match="AIRPEER_TEST_PASSWORD"):
        instance.get_dag("a")
    assert backend._token_login is None
    monkeypatch.setenv("AIRPEER_TEST_PASSWORD", PASSWORD)
    assert instance.get_dag("a").dag_id == "a"
