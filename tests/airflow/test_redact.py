"""Session cookies never reach a log handler through httpcore's DEBUG trace."""

from __future__ import annotations

import logging

import pytest

import dagster_airpeer.airflow._http  # noqa: F401  (installs the filter, as any use of the client does)


def test_set_cookie_values_are_redacted_in_httpcore_debug_records(caplog: pytest.LogCaptureFixture) -> None:
    secret = "session=.eJwlzjEOsecret-cookie-value"
    with caplog.at_level(logging.DEBUG, logger="httpcore"):
        logging.getLogger("httpcore.http11").debug(
            "receive_response_headers.complete return_value=(b'HTTP/1.1', 302, b'FOUND', "
            f"[(b'Server', b'gunicorn'), (b'Set-Cookie', b'{secret}; HttpOnly; Path=/'), (b'set-cookie', b'x=1')])"
        )
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "secret-cookie-value" not in text and "x=1" not in text
    assert "b'gunicorn'" in text and "[redacted]" in text


def test_records_with_arguments_are_redacted_too() -> None:
    record = logging.LogRecord(
        "httpcore.http11",
        logging.DEBUG,
        __file__,
        1,
        "headers=%s",
        ("[(b'Set-Cookie', b'session=top-secret')]",),
        None,
    )
    for log_filter in logging.getLogger("httpcore.http11").filters:
        log_filter.filter(record)
    assert "top-secret" not in record.getMessage() and "[redacted]" in record.getMessage()
