"""When and how long to retry a request to Airflow (tenacity policy).

Retried: connection failures, timeouts, broken HTTP exchanges, bodies cut mid-answer (not valid JSON),
5xx and 429 (honouring `Retry-After`). Never retried: other 4xx, which will not change by asking again.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_any,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

#: Longest `Retry-After` we honour; a server asking for more gets retried after this (then fails).
RETRY_AFTER_CAP_SECONDS = 30.0


class RetryableStatus(Exception):
    """Airflow answered 5xx or 429: worth asking again."""

    def __init__(self, response: httpx.Response, retry_after: float | None) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response
        self.retry_after = retry_after


class BodyNotJSON(Exception):
    """The answer's body is not JSON, typically an answer cut by a proxy or a restarting server."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__("answer is not valid JSON")
        self.response = response


# Transport errors that a later attempt may not meet; a bad URL scheme or a local protocol misuse will.
_NOT_RETRIED_TRANSPORT = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)


def _is_certificate_failure(exc: BaseException) -> bool:
    # httpx wraps the ssl error of a refused certificate in ConnectError; the next attempt meets the same
    # certificate, so retrying only delays the error the user has to act on.
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def is_retryable(exc: BaseException) -> bool:
    """Whether a failed attempt is worth repeating."""
    if isinstance(exc, (RetryableStatus, BodyNotJSON)):
        return True
    return (
        isinstance(exc, httpx.TransportError)
        and not isinstance(exc, _NOT_RETRIED_TRANSPORT)
        and not _is_certificate_failure(exc)
    )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP-date), capped; None if absent."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, min(seconds, RETRY_AFTER_CAP_SECONDS))


class _StopAtDeadline(stop_base):
    """Stop when the next attempt could only start after the deadline (a `time.monotonic()` instant)."""

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        if self.deadline is None:
            return False
        # tenacity (>= 8.3, see pyproject.toml) computes the wait before asking whether to stop.
        return time.monotonic() + retry_state.upcoming_sleep >= self.deadline


def build_retrying(
    *,
    max_retries: int,
    initial_backoff: float,
    max_backoff: float,
    sleep: Callable[[float], None],
    deadline: float | None,
) -> Retrying:
    """A tenacity `Retrying` for one logical request.

    `deadline` is a `time.monotonic()` instant: no retry is scheduled whose sleep would end after it.
    """
    backoff = wait_exponential_jitter(initial=initial_backoff, max=max_backoff, jitter=initial_backoff)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, RetryableStatus) and exc.retry_after is not None:
            return exc.retry_after
        return float(backoff(state))

    return Retrying(
        stop=stop_any(stop_after_attempt(max_retries + 1), _StopAtDeadline(deadline)),
        wait=wait,
        retry=retry_if_exception(is_retryable),
        sleep=sleep,
        reraise=True,
    )
