"""Which failures are retried."""

from __future__ import annotations

import ssl

import httpx

from dagster_airpeer.airflow._retry import is_retryable


def test_a_refused_certificate_is_not_retried_but_a_refused_connection_is() -> None:
    try:
        try:
            raise ssl.SSLCertVerificationError("certificate verify failed: self-signed certificate")
        except ssl.SSLError as cause:
            raise httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED]") from cause
    except httpx.ConnectError as exc:
        assert not is_retryable(exc)
    assert is_retryable(httpx.ConnectError("[Errno 111] Connection refused"))
    assert is_retryable(httpx.ReadTimeout("timed out"))
    assert not is_retryable(httpx.UnsupportedProtocol("ftp://"))
