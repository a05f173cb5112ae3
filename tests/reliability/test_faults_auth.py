"""Credentials going bad while peered: a JWT expired or revoked between two pages, a wrong password, a user
revoked. Expected: one renewal then success, or one clear error naming the instance, never a storm of logins
and never a secret in the message.

The in-memory Airflow gives exact counts of logins and refusals; the real Airflow 3 and 2 tests show the same
against the real `/auth/token` and basic auth.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dagster as dg
import httpx
import pytest

from dagster_airpeer import AirflowAuthError, AirflowBasicAuthBackend, AirflowInstance
from dagster_airpeer.airflow import auth as auth_module
from reliability.fake_airflow import FakeAirflow, ManualClock, populated_fake
from reliability.faults import Fault, FaultTransport, RevokingTransport, network_transport
from reliability.harness import FAKE_URL, drain, peer, peer_fake
from reliability.ledger import compare, recorded_events
from reliability.ticker import Ticker


def _exactly_once(fake: FakeAirflow, instance: dg.DagsterInstance) -> None:
    verdict = compare(fake.completions(), recorded_events(instance))
    assert verdict.ok and verdict.completions == len(fake.completions()), verdict.summary()


def test_token_revoked_between_two_pages_is_renewed_once(
    fake: FakeAirflow, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    transport = FaultTransport(fake.transport(), {3: Fault("hook", hook=fake.revoke_tokens)})
    peered = peer_fake(fake, tmp_path / "snap", transport=transport, page_size=10)
    defs = peered.build()
    logins_at_load = fake.logins
    ticker = Ticker(dagster_instance, peered.sensor)
    outcomes = drain(ticker, defs)
    assert not any(o.failed for o in outcomes)
    assert fake.logins == logins_at_load + 1 and fake.refused == 1
    _exactly_once(fake, dagster_instance)


def test_token_expired_on_airflows_clock_between_two_pages_is_renewed_once(
    tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    """Airflow's clock says the token expired (ours does not): refused once, renewed once, no loop."""
    fake = populated_fake()
    clock = ManualClock(datetime.now(timezone.utc))
    fake.clock = clock
    fake.token_lifetime = 600
    transport = FaultTransport(fake.transport(), {3: Fault("hook", hook=lambda: clock.advance(900))})
    peered = peer_fake(fake, tmp_path / "snap", transport=transport, page_size=10)
    defs = peered.build()
    logins_at_load = fake.logins
    ticker = Ticker(dagster_instance, peered.sensor)
    drain(ticker, defs)
    assert fake.logins == logins_at_load + 1 and fake.refused == 1
    _exactly_once(fake, dagster_instance)


def test_password_changed_between_two_pages_fails_once_per_tick_without_the_secret(
    fake: FakeAirflow, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    fake.password = old_password = f"s3cr3t-{uuid.uuid4()}"

    def change_password() -> None:
        fake.password = f"rotated-{uuid.uuid4()}"
        fake.revoke_tokens()

    transport = FaultTransport(fake.transport(), {3: Fault("hook", hook=change_password)})
    # One request at a time, so that the third request is the third page.
    peered = peer_fake(fake, tmp_path / "snap", transport=transport, page_size=10, max_parallel_requests=1)
    defs = peered.build()
    ticker = Ticker(dagster_instance, peered.sensor)
    first = ticker.tick(defs, raise_errors=False)
    # Two pages were read before the refusal: delivered; the refusal interrupts the tick.
    assert not first.failed and first.events > 0
    logins = fake.logins
    failures = [ticker.tick(defs, raise_errors=False) for _ in range(3)]
    assert all(isinstance(o.error, AirflowAuthError) for o in failures)
    assert fake.logins == logins + 3, "one login attempt per tick, not a storm"
    message = str(failures[0].error)
    assert "'admin'" in message and "/auth/token" in message and "127.0.0.1" in message
    assert old_password not in message and fake.password not in message
    # The operator fixes the password: the next ticks deliver the rest, once.
    fake.password = old_password
    drain(ticker, defs)
    _exactly_once(fake, dagster_instance)


@pytest.mark.parametrize("lifetime", [60, 20, 5])
def test_short_lived_tokens_are_reused_across_ticks(
    lifetime: int, tmp_path: Path, dagster_instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Airflow configured with short-lived JWTs (`[api_auth] jwt_expiration_time` of a minute or less): the
    load and the ticks that follow within the token's life share one login (#13.11), not one per request."""
    # Both clocks that judge a token (Airflow's and the auth backend's) stand still, so that however slow
    # this machine is, everything happens within the life of the first token.
    fake = populated_fake()
    clock = ManualClock(datetime.now(timezone.utc))
    fake.clock = clock
    frozen = SimpleNamespace(time=clock.now.timestamp, monotonic=time.monotonic)
    monkeypatch.setattr(auth_module, "time", frozen)
    fake.token_lifetime = lifetime
    peered = peer_fake(fake, tmp_path / "snap", page_size=10)
    defs = peered.build()
    ticker = Ticker(dagster_instance, peered.sensor)
    outcomes = drain(ticker, defs)
    assert not any(o.failed for o in outcomes)
    api_requests = [r for r in fake.requests if r[1].startswith("/api/v2/") and "health" not in r[1]]
    assert len(api_requests) > 5
    assert fake.logins == 1, f"{fake.logins} logins for {len(api_requests)} requests"
    _exactly_once(fake, dagster_instance)


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_wrong_password_is_one_clear_error_even_with_a_stored_snapshot(version: str, tmp_path: Path) -> None:
    """A refused password fails the code location load (a stored snapshot must not hide it), after exactly
    one refused call: v2 one login, v1 one request. The sensor never runs with it."""
    fake = populated_fake(version)
    peer_fake(fake, tmp_path / "snap").build()  # a good load stores a snapshot
    wrong = f"wrong-{uuid.uuid4()}"
    bad = peer(FAKE_URL, fake.username, wrong, tmp_path / "snap", transport=fake.transport())
    before = len(fake.requests)
    with pytest.raises(AirflowAuthError) as excinfo:
        bad.build()
    message = str(excinfo.value)
    assert wrong not in message and FAKE_URL in message and "'admin'" in message
    refused = [r for r in fake.requests[before:] if "health" not in r[1]]
    assert refused == ([("POST", "/auth/token")] if version == "v2" else [("GET", "/api/v1/dags")])


# -- real Airflow -------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_real_airflow3_token_revoked_between_pages_is_renewed_once(
    airflow3: Any, seeded3: Any, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    revoking = RevokingTransport(network_transport())
    transport = FaultTransport(revoking, {3: Fault("hook", hook=revoking.revoke_current)})
    peered = peer(
        airflow3.url, airflow3.username, airflow3.password, tmp_path / "snap",
        transport=transport, page_size=5,
    )  # fmt: skip
    defs = peered.build()
    logins_at_load = revoking.logins
    ticker = Ticker(dagster_instance, peered.sensor)
    outcomes = drain(ticker, defs)
    assert not any(o.failed for o in outcomes), [o.error for o in outcomes]
    assert revoking.refusals == 1 and revoking.logins == logins_at_load + 1
    delivered = {e.completion[1] for e in recorded_events(dagster_instance)}
    assert seeded3.run_ids <= delivered


def test_real_wrong_password_is_one_clear_refusal(airflow: Any, tmp_path: Path) -> None:
    # The shared `airflow` fixture (not getfixturevalue): tests/conftest.py groups tests by the stack fixtures
    # they name, so that each shared stack starts on one pytest-xdist worker only.
    stack, major = airflow, airflow.major
    wrong = f"s3cr3t-{uuid.uuid4()}"
    calls: list[str] = []

    def count(req: httpx.Request) -> bool:
        calls.append(req.url.path)
        return False

    transport = FaultTransport(network_transport(), {}, match=count)
    instance = AirflowInstance(
        AirflowBasicAuthBackend(stack.url, stack.username, wrong), name="wrongpw", transport=transport
    )
    with pytest.raises(AirflowAuthError) as excinfo:
        instance.list_dags()
    message = str(excinfo.value)
    assert stack.url in message and f"'{stack.username}'" in message
    assert wrong not in message
    assert [c for c in calls if "health" not in c] == (["/auth/token"] if major == 3 else ["/api/v1/dags"])


@pytest.mark.integration
def test_real_airflow2_user_deleted_while_peered(
    airflow2: Any, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    user, password = f"rel_{uuid.uuid4().hex[:6]}", f"s3cr3t-{uuid.uuid4()}"
    airflow2.cli(
        "users", "create", "--username", user, "--password", password, "--role", "Admin",
        "--firstname", "R", "--lastname", "P", "--email", f"{user}@example.com",
    )  # fmt: skip
    peered = peer(airflow2.url, user, password, tmp_path / "snap")
    defs = peered.build()
    ticker = Ticker(dagster_instance, peered.sensor)
    assert not ticker.tick(defs, raise_errors=False).failed
    airflow2.cli("users", "delete", "--username", user)
    outcomes = [ticker.tick(defs, raise_errors=False) for _ in range(2)]
    for outcome in outcomes:
        assert isinstance(outcome.error, AirflowAuthError), outcome.error
        assert airflow2.url in str(outcome.error) and password not in str(outcome.error)


@pytest.mark.integration
def test_real_airflow3_password_changed_then_token_refused(
    airflow3: Any, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    """The SimpleAuthManager reads its passwords file at each login: a rotated password is refused at the
    next login, which a refused (revoked) token forces. Restored afterwards (the stack is shared)."""
    passwords = Path(airflow3.env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    original = passwords.read_text()
    revoking = RevokingTransport(network_transport())
    peered = peer(airflow3.url, airflow3.username, airflow3.password, tmp_path / "snap", transport=revoking)
    defs = peered.build()
    ticker = Ticker(dagster_instance, peered.sensor)
    assert not ticker.tick(defs, raise_errors=False).failed
    try:
        passwords.write_text(json.dumps({airflow3.username: f"rotated-{uuid.uuid4()}"}))
        revoking.revoke_current()
        logins = revoking.logins
        outcome = ticker.tick(defs, raise_errors=False)
        assert isinstance(outcome.error, AirflowAuthError), outcome.error
        assert revoking.logins == logins + 1
        assert airflow3.password not in str(outcome.error).replace(airflow3.username, "")
    finally:
        passwords.write_text(original)
    drain(ticker, defs)


@pytest.mark.integration
def test_real_airflow3_forbidden_costs_no_login_and_a_revoked_token_one(airflow_stack_factory: Any) -> None:
    """What the real Airflow 3.3 answers, and what airpeer spends on it: a missing permission (a Viewer
    pausing DAGs) is 403 "Forbidden" and costs no login; a garbage or really revoked token (revoked by
    `GET /api/v2/auth/logout`) is 403 "Invalid JWT token" and costs exactly one; no token is 401. Its
    tokens live one minute (`[api_auth] jwt_expiration_time`), and one of them serves every request of that
    minute but its last seconds (#13.11), not a single one.

    SimpleAuthManager takes its users from the configuration, so a Viewer needs a stack of its own."""
    stack = airflow_stack_factory(
        3,
        extra_env={
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
            "AIRFLOW__API_AUTH__JWT_EXPIRATION_TIME": "60",
        },
    )
    viewer, viewer_password = "viewer", f"s3cr3t-{uuid.uuid4()}"
    passwords = Path(stack.env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    passwords.write_text(json.dumps({stack.username: stack.password, viewer: viewer_password}))

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    with httpx.Client(base_url=stack.url, timeout=30) as raw:
        login = raw.post("/auth/token", json={"username": viewer, "password": viewer_password})
        assert login.status_code == 201, login.text
        token = login.json()["access_token"]
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        assert claims["exp"] - claims["iat"] == 60
        dag_id = raw.get("/api/v2/dags", headers=bearer(token)).json()["dags"][0]["dag_id"]
        forbidden = raw.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": True}, headers=bearer(token))
        assert (forbidden.status_code, forbidden.json()["detail"]) == (403, "Forbidden")
        garbage = raw.get("/api/v2/dags", headers=bearer(token[:-4] + "AAAA"))
        assert (garbage.status_code, garbage.json()["detail"]) == (403, "Invalid JWT token")
        assert raw.get("/api/v2/dags").status_code == 401
        assert raw.get("/api/v2/auth/logout", headers=bearer(token)).status_code == 307
        revoked = raw.get("/api/v2/dags", headers=bearer(token))
        assert (revoked.status_code, revoked.json()["detail"]) == (403, "Invalid JWT token")

        counting = RevokingTransport(
            network_transport()
        )  # revokes nothing itself: counts logins, keeps the token
        instance = AirflowInstance(
            AirflowBasicAuthBackend(stack.url, viewer, viewer_password), name="viewer", transport=counting
        )
        dags = instance.list_dags()
        assert counting.logins == 1
        for dag in dags[:5]:
            with pytest.raises(AirflowAuthError, match="403") as excinfo:
                instance.set_paused(dag.dag_id, True)
            assert viewer_password not in str(excinfo.value)
        assert counting.logins == 1, "a missing permission is no reason to log in"
        assert counting.last_token is not None
        # Airflow revokes the token in use:
        assert raw.get("/api/v2/auth/logout", headers=bearer(counting.last_token)).status_code == 307
        assert [d.dag_id for d in instance.list_dags()] == [d.dag_id for d in dags]
        assert counting.logins == 2 and counting.refusals == 0
        instance.close()
