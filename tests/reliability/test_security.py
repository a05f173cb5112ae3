"""Secrets never leak; TLS is verified by default; credentials can come from the environment.

* Secrets: a distinctive password ("s3cr3t-<uuid>") is set on the real Airflow user (Airflow 3: the
  SimpleAuthManager passwords file; Airflow 2: a new user). After loading definitions, ticking, a token
  renewal, a refused password and an unreachable server, every artefact is searched for the password, the
  basic-auth header value, the JWTs obtained and the Airflow 2 session cookie: every log record at DEBUG
  (httpx, httpcore, dagster, dagster_airpeer), every exception text and traceback, the events' metadata,
  the cursor, the snapshot directory and every file of the Dagster instance's storage.
* TLS: a tiny https server on 127.0.0.1 with a certificate of a throwaway CA (made with `cryptography`,
  which Airflow and Dagster already depend on) answering as Airflow does.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ipaddress
import json
import logging
import ssl
import threading
import traceback
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest

from dagster_airpeer import (
    AirflowBasicAuthBackend,
    AirflowConfigError,
    AirflowConnectionError,
    AirflowInstance,
    build_defs_from_airflow_instance,
)
from reliability.fake_airflow import FakeAirflow, populated_fake
from reliability.faults import Fault, FaultTransport, RevokingTransport, network_transport
from reliability.harness import drain, peer
from reliability.ledger import recorded_events
from reliability.ticker import Ticker

LOGGERS = ("httpx", "httpcore", "dagster", "dagster_airpeer", "")


@pytest.fixture
def debug_log(tmp_path: Path) -> Iterator[Path]:
    """Every log record of the test, at DEBUG, written to a file (formatted with its arguments)."""
    with _debug_log_to(tmp_path / "debug.log") as path:
        yield path


@contextlib.contextmanager
def _debug_log_to(path: Path) -> Iterator[Path]:
    handler = logging.FileHandler(path)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    saved = {}
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved[name] = logger.level
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
    try:
        yield path
    finally:
        for name in LOGGERS:
            logging.getLogger(name).removeHandler(handler)
            logging.getLogger(name).setLevel(saved[name])
        handler.close()


def _texts_of(exc: BaseException) -> str:
    return "\n".join([str(exc), repr(exc), "".join(traceback.format_exception(exc))])


def _files_text(*roots: Path) -> str:
    parts = []
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            parts.append(path.read_bytes().decode("utf-8", errors="replace"))
    return "\n".join(parts)


def _assert_clean(artefacts: dict[str, str], secrets: dict[str, str]) -> None:
    leaks = [
        f"{secret_name} in {where}"
        for where, text in artefacts.items()
        for secret_name, secret in secrets.items()
        if secret and secret in text
    ]
    assert not leaks, leaks


class _SetCookies(httpx.BaseTransport):
    """Records every cookie value the server hands out (Set-Cookie), so that each one, not only the session
    the client holds at the end, is looked for in the artefacts. On a loaded machine the 2.11 webserver may
    answer a session request with a 500, and the client then drops that session and goes back to basic auth."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.values: dict[str, str] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        for header in response.headers.get_list("set-cookie"):
            name, _, value = header.split(";", 1)[0].partition("=")
            if len(value) >= 8:
                self.values[f"{name.strip()} #{len(self.values)}"] = value.strip()
        return response

    def close(self) -> None:
        self.inner.close()


def _exercise(
    stack: Any, username: str, password: str, tmp_path: Path, debug_log: Path
) -> tuple[dict[str, str], dict[str, str]]:
    """Load, tick, force a login mid-flow, run DAGs, fail to log in, fail to connect; collect artefacts."""
    handed_out = _SetCookies(network_transport())
    revoking = RevokingTransport(handed_out)
    revoke = Fault("hook", hook=revoking.revoke_current)
    transport = FaultTransport(revoking, {2: revoke})
    snapshots = tmp_path / "snap"
    peered = peer(stack.url, username, password, snapshots, transport=transport, page_size=20)
    errors: list[BaseException] = []
    with dg.instance_for_test() as instance:
        defs = peered.build()
        ticker = Ticker(instance, peered.sensor)
        drain(ticker, defs)
        client = peered.instance
        ok = client.trigger_dag_run("airpeer_ok", conf={"note": "security test"})
        failed = client.trigger_dag_run("airpeer_fail")
        client.wait_for_dag_run("airpeer_ok", ok.run_id, timeout=240)
        client.wait_for_dag_run("airpeer_fail", failed.run_id, timeout=240)
        drain(ticker, defs)
        assert {ok.run_id, failed.run_id} <= {e.completion[1] for e in recorded_events(instance)}
        # A refused password, an unreachable server (one tick each), and the errors they raise.
        wrong = peer(stack.url, username, password + "-wrong", snapshots, name="wrong")
        try:
            wrong.build()
        except Exception as exc:
            errors.append(exc)
        down = peer("http://127.0.0.1:9", username, password, tmp_path / "none", name="down", max_retries=0)
        try:
            down.build()
        except Exception as exc:
            errors.append(exc)
        outcome = ticker.tick(defs, raise_errors=False)
        assert not outcome.failed
        backend = peered.instance.auth_backend
        tokens = {"jwt": getattr(backend, "_token", None) or ""}
        tokens.update({f"revoked jwt {i}": t for i, t in enumerate(sorted(revoking.revoked))})
        cookies = getattr(backend, "_cookies", {}) or {}
        tokens.update({f"cookie {k} (held)": v for k, v in cookies.items() if len(v) >= 8})
        tokens.update({f"cookie {k}": v for k, v in handed_out.values.items()})
        assert len(errors) == 2
        events = recorded_events(instance)
        artefacts = {
            "debug log": debug_log.read_text(errors="replace"),
            "exceptions": "\n".join(_texts_of(e) for e in errors),
            "event metadata": "\n".join(repr(e.metadata) for e in events),
            "cursor": ticker.cursor or "",
            "snapshot": _files_text(snapshots),
            "dagster storage": _files_text(Path(instance.root_directory)),
            "reprs": repr(peered.instance) + repr(backend),
        }
    secrets = {
        "password": password,
        "basic header": base64.b64encode(f"{username}:{password}".encode()).decode(),
        **tokens,
    }
    return artefacts, secrets


@pytest.mark.integration
def test_no_secret_anywhere_airflow3(airflow3: Any, tmp_path: Path, debug_log: Path) -> None:
    passwords = Path(airflow3.env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    original = passwords.read_text()
    secret = f"s3cr3t-{uuid.uuid4()}"
    passwords.write_text(json.dumps({airflow3.username: secret}))
    try:
        artefacts, secrets = _exercise(airflow3, airflow3.username, secret, tmp_path, debug_log)
    finally:
        passwords.write_text(original)
    assert secrets["jwt"] and any(k.startswith("revoked") for k in secrets), "no JWT was obtained"
    assert "POST /auth/token" in artefacts["debug log"] or "/auth/token" in artefacts["debug log"]
    _assert_clean(artefacts, secrets)


@pytest.fixture(scope="module")
def airflow2_artefacts(
    airflow2: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, str], dict[str, str]]:
    """The exercise run once against Airflow 2 with a new user whose password is distinctive."""
    tmp_path = tmp_path_factory.mktemp("security2")
    user, secret = f"sec_{uuid.uuid4().hex[:6]}", f"s3cr3t-{uuid.uuid4()}"
    airflow2.cli(
        "users", "create", "--username", user, "--password", secret, "--role", "Admin",
        "--firstname", "S", "--lastname", "T", "--email", f"{user}@example.com",
    )  # fmt: skip
    with _debug_log_to(tmp_path / "debug.log") as log:
        try:
            return _exercise(airflow2, user, secret, tmp_path, log)
        finally:
            airflow2.cli("users", "delete", "--username", user, check=False)


@pytest.mark.integration
def test_no_password_anywhere_airflow2(airflow2_artefacts: tuple[dict[str, str], dict[str, str]]) -> None:
    artefacts, secrets = airflow2_artefacts
    _assert_clean(artefacts, {k: v for k, v in secrets.items() if not k.startswith("cookie")})


@pytest.mark.integration
def test_no_session_cookie_anywhere_airflow2(
    airflow2_artefacts: tuple[dict[str, str], dict[str, str]],
) -> None:
    artefacts, secrets = airflow2_artefacts
    cookies = {k: v for k, v in secrets.items() if k.startswith("cookie")}
    assert cookies, "no session cookie was handed out"
    _assert_clean(artefacts, cookies)


# -- TLS ----------------------------------------------------------------------------------------------------


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate for 127.0.0.1/localhost signed by it: (ca.pem, cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "airpeer test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca_path, cert_path, key_path


@pytest.fixture
def https_airflow(tmp_path: Path) -> Iterator[tuple[str, Path, FakeAirflow]]:
    """The in-memory Airflow served over https on 127.0.0.1 (a free port), with its CA bundle."""
    ca, cert, key = _certificates(tmp_path)
    fake = populated_fake(runs=12, ties=0)

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            request = httpx.Request(
                self.command,
                f"https://127.0.0.1{self.path}",
                headers=dict(self.headers.items()),
                content=body,
            )
            response = fake.handle(request)
            self.send_response(response.status_code)
            for name, value in response.headers.items():
                if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(name, value)
            self.send_header("content-length", str(len(response.content)))
            self.end_headers()
            self.wfile.write(response.content)

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", ca, fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_tls_is_verified_by_default(https_airflow: tuple[str, Path, FakeAirflow]) -> None:
    url, _ca, fake = https_airflow
    instance = AirflowInstance(
        AirflowBasicAuthBackend(url, fake.username, fake.password), name="tls", max_retries=0
    )
    with pytest.raises(AirflowConnectionError) as excinfo:
        instance.list_dags()
    message = str(excinfo.value)
    assert "'tls'" in message and url in message
    assert "CERTIFICATE_VERIFY_FAILED" in message or "certificate verify failed" in message.lower()
    assert not [r for r in fake.requests if "dags" in r[1]], "a request went through an unverified connection"


def test_tls_with_the_ca_bundle_peers_end_to_end(
    https_airflow: tuple[str, Path, FakeAirflow], tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    url, ca, fake = https_airflow
    peered = peer(url, fake.username, fake.password, tmp_path / "snap", verify=str(ca), name="tls")
    defs = peered.build()
    ticker = Ticker(dagster_instance, peered.sensor)
    drain(ticker, defs)
    assert {e.completion for e in recorded_events(dagster_instance) if e.kind != "check" or not e.passed} == {
        c for c in fake.completions()
    }


def test_a_wrong_ca_bundle_is_refused(https_airflow: tuple[str, Path, FakeAirflow], tmp_path: Path) -> None:
    url, _ca, fake = https_airflow
    (tmp_path / "other").mkdir()
    other_ca, _, _ = _certificates(tmp_path / "other")
    instance = AirflowInstance(
        AirflowBasicAuthBackend(url, fake.username, fake.password),
        name="tls",
        verify=str(other_ca),
        max_retries=0,
    )
    with pytest.raises(AirflowConnectionError):
        instance.list_dags()


@pytest.mark.parametrize(
    ("url", "warns"),
    [
        ("http://airflow.example.com:8080", True),
        ("http://10.1.2.3:8080", True),
        ("https://airflow.example.com", False),
        ("http://localhost:8080", False),
        ("http://127.0.0.1:8080", False),
        ("http://[::1]:8080", False),
    ],
)
def test_plain_http_to_a_non_loopback_host_warns(
    url: str, warns: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = populated_fake(runs=3, ties=0)
    instance = AirflowInstance(
        AirflowBasicAuthBackend(url, fake.username, fake.password), name="plain", transport=fake.transport()
    )
    with caplog.at_level(logging.WARNING):
        build_defs_from_airflow_instance(airflow_instance=instance, snapshot_dir=tmp_path)
    warned = [r for r in caplog.records if "plain http" in r.getMessage()]
    assert bool(warned) == warns
    assert all(fake.password not in r.getMessage() for r in caplog.records)


# -- credentials from the environment -----------------------------------------------------------------------


def test_credentials_from_environment_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    fake = populated_fake(runs=6, ties=0)
    fake.password = f"s3cr3t-{uuid.uuid4()}"
    monkeypatch.setenv("REL_AIRFLOW_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("REL_AIRFLOW_USER", fake.username)
    monkeypatch.setenv("REL_AIRFLOW_PASSWORD", fake.password)
    backend = AirflowBasicAuthBackend(
        webserver_url=dg.EnvVar("REL_AIRFLOW_URL"),  # type: ignore[arg-type]
        username=dg.EnvVar("REL_AIRFLOW_USER"),
        password=dg.EnvVar("REL_AIRFLOW_PASSWORD"),
    )
    instance = AirflowInstance(backend, name="from_env", transport=fake.transport())
    defs = build_defs_from_airflow_instance(airflow_instance=instance, snapshot_dir=tmp_path)
    ticker = Ticker(dagster_instance, "from_env__airflow_dag_runs")
    drain(ticker, defs)
    assert len(recorded_events(dagster_instance)) >= 6
    assert "REL_AIRFLOW_PASSWORD" in repr(backend) and fake.password not in repr(backend)
    assert fake.password not in repr(instance)
    # A variable that is not set: a clear error naming it, not its (absent) value.
    monkeypatch.delenv("REL_AIRFLOW_PASSWORD")
    unset = AirflowInstance(
        AirflowBasicAuthBackend("http://127.0.0.1:9", "admin", dg.EnvVar("REL_AIRFLOW_PASSWORD")),
        name="unset",
        transport=fake.transport(),
    )
    with pytest.raises(AirflowConfigError, match="REL_AIRFLOW_PASSWORD"):
        unset.list_dags()
