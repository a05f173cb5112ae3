"""Logins to managed Airflow: Amazon MWAA, Google Cloud Composer and Astronomer, as `AirflowAuthBackend`s.

- `AirflowMwaaAuthBackend`: an AWS identity (boto3) asks MWAA for a web login token (`create_web_login_token`,
  valid 60 s by AWS's documentation) and trades it at the environment's web server for what the REST API
  accepts: on Airflow 2 a `session` cookie (`POST /aws_mwaa/login`), on Airflow 3 a JWT handed out as the
  `_token` cookie (`POST /pluginsv2/aws_mwaa/login`) and sent as a bearer token. The flow is chosen by the path
  of each request, like `AirflowBasicAuthBackend`, so one backend serves an environment before and after an
  upgrade. Needs the `[mwaa]` extra.
- `AirflowComposerAuthBackend`: Google credentials (`google.auth.default()` or given ones) as a bearer token,
  refreshed shortly before they expire. Needs the `[composer]` extra.
- `AirflowAstronomerAuthBackend`: an Astronomer deployment API token as a bearer token.

Every credential is renewed before it expires and once after Airflow refuses it; concurrent requests share one
login (single flight, sent without holding the lock). No token, cookie or key ever reaches a log line, an
exception message or a `repr`. boto3 and google-auth are imported only when a backend needs them, so that the
base install does without them.
"""

from __future__ import annotations

import importlib
import logging
import re
import threading
import time
from collections.abc import Generator, Sequence
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import urlsplit

import httpx

# Private helpers of auth.py, shared on purpose: the single-flight login (`_Login`, `_login_wait_seconds`), the
# renewal point of a JWT (`_renewal_point`, `_renew_margin`), the reading of settings and cookies, and what
# counts as a refusal. Keeping one copy keeps the managed logins in step with the basic one.
from ._http import _is_loopback
from .auth import (
    _REFUSED,
    AirflowAuthBackend,
    AirflowTokenAuthBackend,
    SecretValue,
    _cookie_header,
    _cookies_of,
    _describe,
    _error_text,
    _jwt_expiry,
    _Login,
    _login_wait_seconds,
    _renew_margin,
    _renewal_point,
    _UnlockedLoginFlows,
)
from .errors import AirflowAuthError, AirflowConfigError, AirflowConnectionError

logger = logging.getLogger("dagster_airpeer.airflow")

__all__ = [
    "AirflowAstronomerAuthBackend",
    "AirflowComposerAuthBackend",
    "AirflowMwaaAuthBackend",
]

#: The OAuth scope Cloud Composer's Airflow web server accepts (Google's documented example).
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"

#: A session or token whose end we cannot read is renewed after this long (and on Airflow's first refusal).
#: A login costs one MWAA API call and one POST: doing it hourly costs nothing worth saving.
_DEFAULT_MAX_AGE_SECONDS = 3600.0

#: A web login token learnt while looking up the web server (no `webserver_url` given) is used for the first
#: login only while it is this young: AWS documents 60 s of validity.
_SPARE_WEB_TOKEN_SECONDS = 30.0

#: AWS's pattern for an MWAA environment name (CreateWebLoginToken, `Name`).
_MWAA_NAME = re.compile(r"[a-zA-Z][0-9a-zA-Z_-]{0,79}")


def _import_extra(module: str, extra: str, backend: str) -> Any:
    """Import an optional dependency, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise AirflowConfigError(
            f"{backend} needs the optional dependency {module.split('.')[0]!r}, which is not installed: "
            f"install it with `pip install 'dagster-airpeer[{extra}]'`."
        ) from None


def _require_tls(webserver_url: str, backend: str) -> None:
    """Managed logins carry cloud credentials: refuse plain http except on loopback (a port forward)."""
    parts = urlsplit(webserver_url)
    if parts.scheme != "https" and not _is_loopback(parts.hostname or ""):
        raise AirflowConfigError(
            f"`webserver_url` of {backend} must be an https URL (its credentials must not travel in clear "
            f"text), got {webserver_url!r}."
        )


def _cookie_lifetime(response: httpx.Response, name: str, now: float) -> float | None:
    """How long the cookie `name` set by `response` lives, by its Max-Age or Expires; None if not said."""
    for header in response.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(header)
        except CookieError:
            continue
        morsel = jar.get(name)
        if morsel is None:
            continue
        if morsel["max-age"]:
            try:
                return float(morsel["max-age"])
            except ValueError:
                return None
        if morsel["expires"]:
            try:
                return float(parsedate_to_datetime(str(morsel["expires"])).timestamp()) - now
            except (TypeError, ValueError):
                return None
    return None


def _renew_after(lifetime: float, received_at: float) -> float:
    """When (by `time.time()`) something living `lifetime` seconds from `received_at` is renewed."""
    return received_at + lifetime - _renew_margin(lifetime)


def _bearer(request: httpx.Request, credential: str) -> None:
    request.headers["Authorization"] = f"Bearer {credential}"
    # A bearer request carries no cookie: the client's jar may hold the login's Set-Cookie (MWAA's `_token`),
    # which must not travel beside the header, nor outlive a renewal.
    request.headers.pop("Cookie", None)


class _ManagedAuthBackend(_UnlockedLoginFlows, AirflowAuthBackend):
    """What the managed logins share: a credential per kind of request (`_kind_of`), obtained by `_login`,
    renewed at its renewal point and once after Airflow refuses it; concurrent requests wait for the login
    in flight instead of logging in each (the lock is never held while a login is on the wire)."""

    #: For messages: what the service is ("Amazon MWAA environment 'x'").
    _service: str = "managed Airflow"

    def __init__(self, webserver_url: str) -> None:
        super().__init__(webserver_url)
        self._lock = threading.RLock()
        #: kind -> (credential, renewal point by time.time() or None: kept until refused).
        self._credentials: dict[str, tuple[str, float | None]] = {}
        self._flights: dict[str, _Login] = {}
        #: kind -> (the stale credential a refused login was to replace, when, the message): requests already
        #: in flight get the same refusal instead of each trying a login of their own.
        self._refusals: dict[str, tuple[str | None, float, str]] = {}
        #: Logins made (for tests and benchmarks), per kind.
        self.logins: dict[str, int] = {}

    # -- to implement ---------------------------------------------------------------------------------------

    def _kind_of(self, request: httpx.Request) -> str | None:
        """Which credential `request` needs; None: none (not a REST call of this web server)."""
        return "bearer" if self.api_version_of(request) is not None else None

    def _login(
        self, kind: str, request: httpx.Request, stale: str | None
    ) -> Generator[httpx.Request, httpx.Response, tuple[str, float | None] | None]:
        """Obtain a credential of `kind` other than `stale` (may yield requests to the web server): the
        credential and its renewal point, or None after a transient failure (the flow then ends with the
        login's answer, for the instance's retry policy). Raises `AirflowAuthError` when refused."""
        raise NotImplementedError
        yield request  # a generator, like its implementations

    def _apply(self, request: httpx.Request, kind: str, credential: str) -> None:
        _bearer(request, credential)

    # -- flow -----------------------------------------------------------------------------------------------

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        kind = self._kind_of(request)
        if kind is None:
            yield request  # not a REST call of this web server: no credential to spend on it
            return
        started = time.monotonic()
        credential = self._valid(kind)
        if credential is None:
            credential = yield from self._renew(kind, request, stale=None, started=started)
            if credential is None:
                return
        self._apply(request, kind, credential)
        response = yield request
        if not self._blames(response, kind, credential):
            return
        # Refused although we believed it valid (revoked, server restarted, clock skew): log in again, once.
        credential = yield from self._renew(kind, request, stale=credential, started=started)
        if credential is None:
            return
        self._apply(request, kind, credential)
        response = yield request
        if self._blames(response, kind, credential):
            raise AirflowAuthError(
                f"The Airflow of {self._service} at {self.webserver_url} refused a fresh login of "
                f"{self.describe_principal()} (HTTP {response.status_code} on {request.method} "
                f"{request.url.path}). {self._refusal_hint()}"
            )

    def _refusal_hint(self) -> str:
        return "Check that this identity may use the Airflow REST API."

    def _valid(self, kind: str) -> str | None:
        with self._lock:
            entry = self._credentials.get(kind)
            if entry is None or self._due(entry):
                return None
            return entry[0]

    @staticmethod
    def _due(entry: tuple[str, float | None]) -> bool:
        return entry[1] is not None and time.time() >= entry[1]

    def _blames(self, response: httpx.Response, kind: str, credential: str) -> bool:
        """Whether Airflow refused the request for its credential (a login may cure that) rather than for a
        missing permission (none can). A 401 blames the credential. Airflow 2 answers 401 to a session it
        does not accept, so a 403 on a session is a permission answer; on a bearer token (Airflow 3: 403
        "Invalid JWT token" for a token it does not accept) a 403 blames the token when Airflow names it or
        when the token is at its renewal point."""
        if response.status_code == 401:
            return True
        if response.status_code != 403 or kind == "session":
            return False
        with self._lock:
            entry = self._credentials.get(kind)
        due = entry is not None and entry[0] == credential and self._due(entry)
        return due or "token" in _error_text(response).lower()

    def _renew(
        self, kind: str, request: httpx.Request, stale: str | None, started: float
    ) -> Generator[httpx.Request, httpx.Response, str | None]:
        """A credential other than `stale`: one another request just obtained, or a login of our own."""
        while True:
            with self._lock:
                current = self._valid(kind)
                if current is not None and current != stale:
                    return current
                refusal = self._refusals.get(kind)
                if refusal is not None and refusal[0] == stale and refusal[1] >= started:
                    raise AirflowAuthError(refusal[2])
                login = self._flights.get(kind)
                lead = login is None
                if login is None:
                    login = self._flights[kind] = _Login()
                    self.logins[kind] = self.logins.get(kind, 0) + 1
            if not lead:
                if not login.done.wait(_login_wait_seconds(request)):
                    with self._lock:
                        if self._flights.get(kind) is login:
                            del self._flights[kind]
                continue  # its credential, its refusal, or (after a transient failure) a login of our own
            try:
                try:
                    result = yield from self._login(kind, request, stale)
                except AirflowAuthError as exc:
                    with self._lock:
                        self._refusals[kind] = (stale, time.monotonic(), str(exc))
                    raise
                if result is None:
                    return None
                with self._lock:
                    self._credentials[kind] = result
                    self._refusals.pop(kind, None)
                logger.debug("%s: logged in (%s) for %s", self.webserver_url, kind, self._service)
                return result[0]
            finally:
                with self._lock:
                    if self._flights.get(kind) is login:
                        del self._flights[kind]
                login.done.set()


# -- Amazon MWAA -------------------------------------------------------------------------------------------


class AirflowMwaaAuthBackend(_ManagedAuthBackend):
    """Amazon MWAA (Managed Workflows for Apache Airflow), Airflow 2 and Airflow 3, through AWS credentials.

    For each login, the `mwaa` client's `create_web_login_token(Name=environment_name)` gives a web login
    token (AWS documents 60 s of validity), traded at once at the environment's web server:

    - Airflow 2 (`/api/v1/...`): `POST {webserver_url}/aws_mwaa/login` with the token sets a `session` cookie,
      sent with every REST call. It is renewed before the end its cookie states, else after `max_age`
      seconds, and once after Airflow answers 401 (a 403 is a missing permission and costs no login).
    - Airflow 3 (`/api/v2/...`): `POST {webserver_url}/pluginsv2/aws_mwaa/login` sets the `_token` cookie, a
      JWT sent as a bearer token. It is renewed shortly before its `exp` (else after `max_age`), and once after
      Airflow refuses it.

    The flow is chosen by the path of each request, so the same backend serves an environment before and
    after its upgrade. The AWS identity needs `airflow:CreateWebLoginToken` on the environment and is mapped
    to the Airflow role of its IAM policy.

    Args:
        environment_name: the MWAA environment, such as `MyAirflowEnvironment`.
        webserver_url: the web server, such as `https://abc123.c4.us-east-1.airflow.amazonaws.com` (the
            console's "Airflow UI" address, or a VPC endpoint). If not given, it is taken from a web login
            token asked for at once (the `WebServerHostname` it names), whose token serves the first login.
        region_name: the AWS region of the environment (else boto3's default, such as `AWS_REGION`).
        boto3_session: a `boto3.Session` to make the `mwaa` client from (a profile, an assumed role).
        mwaa_client: an `mwaa` client to use as is (botocore's `Stubber` in tests).
        max_age: seconds after which a session or token whose end is not known is renewed.

    Needs `pip install 'dagster-airpeer[mwaa]'`.
    """

    def __init__(
        self,
        environment_name: str,
        webserver_url: str | None = None,
        *,
        region_name: str | None = None,
        boto3_session: Any = None,
        mwaa_client: Any = None,
        max_age: float = _DEFAULT_MAX_AGE_SECONDS,
    ) -> None:
        if not isinstance(environment_name, str) or not _MWAA_NAME.fullmatch(environment_name):
            raise AirflowConfigError(
                "`environment_name` must be the name of an MWAA environment (a letter, then up to 79 letters, "
                f"digits, '-' or '_'), got {environment_name!r}."
            )
        if isinstance(max_age, bool) or not isinstance(max_age, (int, float)) or max_age <= 0:
            raise AirflowConfigError(f"`max_age` must be a positive number of seconds, got {max_age!r}.")
        self.environment_name = environment_name
        self.region_name = region_name
        self.max_age = float(max_age)
        self._boto3_session = boto3_session
        self._client = mwaa_client
        self._client_lock = threading.Lock()
        self._service = f"the Amazon MWAA environment {environment_name!r}"
        if mwaa_client is None:
            _import_extra(
                "boto3", "mwaa", "AirflowMwaaAuthBackend"
            )  # fail at construction, not at first call
        #: A web login token obtained to learn the web server, kept for the first login: (token, monotonic).
        self._spare_token: tuple[str, float] | None = None
        if webserver_url is None:
            token, hostname = self._web_login_token()
            self._spare_token = (token, time.monotonic())
            webserver_url = f"https://{hostname}"
        super().__init__(webserver_url)
        _require_tls(self.webserver_url, "AirflowMwaaAuthBackend")

    def _mwaa(self) -> Any:
        with self._client_lock:
            if self._client is None:
                factory = self._boto3_session
                if factory is None:
                    factory = _import_extra("boto3", "mwaa", "AirflowMwaaAuthBackend")
                self._client = factory.client("mwaa", region_name=self.region_name)
            return self._client

    def _web_login_token(self) -> tuple[str, str]:
        """(WebToken, WebServerHostname) from `create_web_login_token`; AWS errors named, never a secret."""
        exceptions = _import_extra("botocore.exceptions", "mwaa", "AirflowMwaaAuthBackend")
        where = f"the Amazon MWAA environment {self.environment_name!r}"
        try:
            answer = self._mwaa().create_web_login_token(Name=self.environment_name)
        except exceptions.ClientError as exc:
            error = exc.response.get("Error", {}) if isinstance(exc.response, dict) else {}
            code = error.get("Code", "unknown")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in ("InternalServerException", "ThrottlingException") or status >= 500:
                raise AirflowConnectionError(
                    f"AWS could not create a web login token for {where} ({code}); try again later."
                ) from exc
            raise AirflowAuthError(
                f"AWS refused a web login token for {where} ({code}: {error.get('Message', '')}). Check the "
                "environment name and region, and that the AWS identity may call airflow:CreateWebLoginToken "
                "on it."
            ) from exc
        except (exceptions.NoCredentialsError, exceptions.PartialCredentialsError) as exc:
            raise AirflowAuthError(
                f"No AWS credentials to ask for a web login token for {where} ({type(exc).__name__}): give "
                "the process AWS credentials (environment, profile, instance or pod role)."
            ) from exc
        except exceptions.BotoCoreError as exc:
            raise AirflowConnectionError(
                f"Could not ask AWS for a web login token for {where}: {type(exc).__name__}: {exc}"
            ) from exc
        token = answer.get("WebToken") if isinstance(answer, dict) else None
        hostname = answer.get("WebServerHostname") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token or not isinstance(hostname, str) or not hostname:
            raise AirflowAuthError(
                f"AWS answered create_web_login_token for {where} without a WebToken and WebServerHostname."
            )
        return token, hostname

    def _take_web_token(self) -> str:
        with self._lock:
            spare, self._spare_token = self._spare_token, None
        if spare is not None and time.monotonic() - spare[1] < _SPARE_WEB_TOKEN_SECONDS:
            return spare[0]
        return self._web_login_token()[0]

    def _kind_of(self, request: httpx.Request) -> str | None:
        version = self.api_version_of(request)
        if version == "v1":
            return "session"
        if version == "v2":
            return "jwt"
        return None

    def _apply(self, request: httpx.Request, kind: str, credential: str) -> None:
        if kind == "session":
            request.headers["Cookie"] = _cookie_header({"session": credential})
        else:
            _bearer(request, credential)

    def _login(
        self, kind: str, request: httpx.Request, stale: str | None
    ) -> Generator[httpx.Request, httpx.Response, tuple[str, float | None] | None]:
        path, cookie = (
            ("/aws_mwaa/login", "session") if kind == "session" else ("/pluginsv2/aws_mwaa/login", "_token")
        )
        login_url = f"{self.webserver_url}{path}"
        web_token = self._take_web_token()  # blocking AWS call, made by the one request that leads the login
        answer = yield httpx.Request(
            "POST",
            login_url,
            data={"token": web_token},
            headers={"Accept": "text/html"},
            extensions={k: v for k, v in request.extensions.items() if k == "timeout"},
        )
        if answer.status_code >= 500 or answer.status_code == 429:
            return None
        received_at = time.time()
        value = _cookies_of(answer).get(cookie)
        if not value:
            other = (
                "Airflow 3 logs in at /pluginsv2/aws_mwaa/login"
                if kind == "session"
                else ("Airflow 2 logs in at /aws_mwaa/login")
            )
            raise AirflowAuthError(
                f"{self._service[0].upper()}{self._service[1:]} did not log in at {login_url} (HTTP "
                f"{answer.status_code}, no {cookie!r} cookie). Check that the AWS identity is mapped to an "
                f"Airflow role and that the environment runs Airflow {'2' if kind == 'session' else '3'} "
                f"({other}); `webserver_url` must be the environment's web server."
            )
        if kind == "jwt":
            renew_at = _renewal_point(value, received_at)
        else:
            lifetime = _cookie_lifetime(answer, cookie, received_at)
            renew_at = None if lifetime is None or lifetime <= 0 else _renew_after(lifetime, received_at)
        if renew_at is None or renew_at > received_at + self.max_age:
            renew_at = received_at + self.max_age
        return value, renew_at

    def _refusal_hint(self) -> str:
        return "Check the Airflow role the AWS identity is mapped to."

    def describe_principal(self) -> str:
        return "the AWS identity"

    def __repr__(self) -> str:
        return (
            f"AirflowMwaaAuthBackend(environment_name={self.environment_name!r}, "
            f"webserver_url={self.webserver_url!r}, region_name={self.region_name!r})"
        )


# -- Google Cloud Composer ---------------------------------------------------------------------------------


class AirflowComposerAuthBackend(_ManagedAuthBackend):
    """Google Cloud Composer (Airflow 2 and 3): Google credentials sent as a bearer token.

    The credentials are `google.auth.default(scopes=scopes)` (a service account key named by
    `GOOGLE_APPLICATION_CREDENTIALS`, workload identity, the metadata server, `gcloud auth
    application-default login`) unless `credentials` are given. Their access token is refreshed shortly before
    its `expiry` (a tenth of its life, at most 60 s), and once after Airflow refuses it; concurrent requests
    share one refresh. The identity needs a Composer role (such as `roles/composer.user`) and an Airflow role.

    Args:
        webserver_url: the environment's Airflow web UI, such as
            `https://abc123-dot-us-central1.composer.googleusercontent.com`.
        credentials: `google.auth.credentials.Credentials` to use instead of the default ones.
        scopes: the OAuth scopes asked for the default credentials.

    Needs `pip install 'dagster-airpeer[composer]'`.
    """

    _service = "Cloud Composer"

    def __init__(
        self,
        webserver_url: str,
        credentials: Any = None,
        *,
        scopes: Sequence[str] = (CLOUD_PLATFORM_SCOPE,),
    ) -> None:
        super().__init__(webserver_url)
        _require_tls(self.webserver_url, "AirflowComposerAuthBackend")
        if isinstance(scopes, str) or not all(isinstance(s, str) for s in scopes):
            raise AirflowConfigError(f"`scopes` must be a list of OAuth scopes, got {scopes!r}.")
        self.scopes = tuple(scopes)
        self._google_transport = _import_extra(
            "google.auth.transport.requests", "composer", "AirflowComposerAuthBackend"
        )
        self._given_credentials = credentials is not None
        self._google_credentials = credentials
        self._google_request: Any = None

    def _default_credentials(self) -> Any:
        google_auth = _import_extra("google.auth", "composer", "AirflowComposerAuthBackend")
        exceptions = _import_extra("google.auth.exceptions", "composer", "AirflowComposerAuthBackend")
        try:
            credentials, _project = google_auth.default(scopes=list(self.scopes))
        except exceptions.DefaultCredentialsError as exc:
            raise AirflowConfigError(
                "AirflowComposerAuthBackend found no Google credentials (google.auth.default): set "
                "GOOGLE_APPLICATION_CREDENTIALS, run `gcloud auth application-default login`, run on Google "
                "Cloud with a service account, or pass `credentials=`."
            ) from exc
        return credentials

    def _login(
        self, kind: str, request: httpx.Request, stale: str | None
    ) -> Generator[httpx.Request, httpx.Response, tuple[str, float | None] | None]:
        exceptions = _import_extra("google.auth.exceptions", "composer", "AirflowComposerAuthBackend")
        if self._google_credentials is None:
            self._google_credentials = self._default_credentials()
        credentials = self._google_credentials
        token = getattr(credentials, "token", None)
        with self._lock:
            held = self._credentials.get(kind)
        # Refresh unless the credentials hold a valid token we have not used yet (given ones, or refreshed
        # by someone else): the token we hold is at its renewal point, or Airflow refused it.
        used = token is not None and (token == stale or (held is not None and token == held[0]))
        if used or not credentials.valid:
            if self._google_request is None:
                self._google_request = self._google_transport.Request()
            try:
                credentials.refresh(self._google_request)
            except exceptions.RefreshError as exc:
                raise AirflowAuthError(
                    f"The Google credentials for Cloud Composer at {self.webserver_url} could not be refreshed "
                    f"({type(exc).__name__}). Check the service account or run `gcloud auth "
                    "application-default login` again."
                ) from None  # a refresh error may quote the token endpoint's answer
            except exceptions.TransportError as exc:
                raise AirflowConnectionError(
                    f"Could not reach Google to refresh the credentials for Cloud Composer at "
                    f"{self.webserver_url} ({type(exc).__name__})."
                ) from None
            token = getattr(credentials, "token", None)
        if not isinstance(token, str) or not token:
            raise AirflowAuthError(
                f"The Google credentials for Cloud Composer at {self.webserver_url} gave no access token."
            )
        return token, self._renewal_of(credentials)
        yield request  # no request to the web server: the refresh goes to Google

    @staticmethod
    def _expiry(credentials: Any) -> float | None:
        expiry = getattr(credentials, "expiry", None)
        if not isinstance(expiry, datetime):
            return None
        # google-auth keeps a naive datetime in UTC.
        aware = expiry if expiry.tzinfo is not None else expiry.replace(tzinfo=timezone.utc)
        return aware.timestamp()

    def _renewal_of(self, credentials: Any) -> float | None:
        expiry = self._expiry(credentials)
        if expiry is None:
            return None
        now = time.time()
        lifetime = expiry - now
        return now if lifetime <= 0 else _renew_after(lifetime, now)

    def _refusal_hint(self) -> str:
        return "Check the Composer and Airflow roles of the Google identity."

    def describe_principal(self) -> str:
        account = getattr(self._google_credentials, "service_account_email", None)
        if isinstance(account, str) and account and account != "default":
            return f"the Google service account {account!r}"
        return "the Google credentials"

    def __repr__(self) -> str:
        source = "given" if self._given_credentials else "google.auth.default()"
        return f"AirflowComposerAuthBackend(webserver_url={self.webserver_url!r}, credentials={source})"


# -- Astronomer --------------------------------------------------------------------------------------------


class AirflowAstronomerAuthBackend(AirflowTokenAuthBackend):
    """An Astronomer (Astro) deployment: a Deployment, Workspace or Organization API token as a bearer token,
    for Airflow 2 and 3 deployments alike.

    Astronomer issues the token (Deployment > Access > API Tokens); a client cannot renew it. So a token that
    is a JWT past its `exp` is refused before it is sent, with the date, and Airflow's refusal names the
    deployment URL. `token` may be a string or a Dagster `EnvVar`.

    Args:
        webserver_url: the deployment URL, such as
            `https://clmkpsyfc010391lb5fw0b3ki.astronomer.run/d1a2b3c4` (Deployment > Details > URL).
        token: the API token.
    """

    #: The refusal's `detail` is read (a 403 naming the token, or a missing permission).
    requires_response_body = True

    def __init__(self, webserver_url: str, token: SecretValue) -> None:
        super().__init__(webserver_url, token)
        _require_tls(self.webserver_url, "AirflowAstronomerAuthBackend")

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._get_token()
        expiry = _jwt_expiry(token)
        if expiry is not None and time.time() >= expiry:
            ended = datetime.fromtimestamp(expiry, tz=timezone.utc).isoformat(timespec="seconds")
            raise AirflowAuthError(
                f"The Astronomer API token for {self.webserver_url} expired at {ended}: create a new one "
                "(Deployment > Access > API Tokens) and give it to airpeer."
            )
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code in _REFUSED and (
            response.status_code == 401 or "token" in _error_text(response).lower()
        ):
            raise AirflowAuthError(
                f"The Astronomer deployment at {self.webserver_url} refused the API token (HTTP "
                f"{response.status_code} on {request.method} {request.url.path}): it is invalid, expired, "
                "revoked or for another deployment. Give airpeer a valid Deployment API token."
            )

    def describe_principal(self) -> str:
        return "the Astronomer API token"

    def __repr__(self) -> str:
        return (
            f"AirflowAstronomerAuthBackend(webserver_url={self.webserver_url!r}, "
            f"token={_describe(self._token_setting)})"
        )
