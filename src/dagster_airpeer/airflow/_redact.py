"""Keep session cookies out of httpcore's DEBUG trace.

httpcore logs every response's headers at DEBUG, `Set-Cookie` included. On Airflow 2 the session cookie stands in
for the password (see auth.py), so it is a secret: a user who turns on DEBUG logging must not find it in the
logs. A filter on httpcore's own loggers rewrites those header values before any handler sees them.
"""

from __future__ import annotations

import logging
import re

# httpcore formats headers as a repr of (name, value) byte pairs: (b'Set-Cookie', b'session=...; Path=/').
_SET_COOKIE = re.compile(r"""(\(b['"]set-cookie['"],\s*)b(['"]).*?\2\)""", re.IGNORECASE)
_HTTPCORE_LOGGERS = (
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.connection",
    "httpcore.proxy",
    "httpcore.socks",
)


class RedactSetCookie(logging.Filter):
    """Replaces the value of every Set-Cookie header in a log record's message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "et-cookie" in message.lower():
            record.msg, record.args = _SET_COOKIE.sub(r"\1b'[redacted]')", message), None
        return True


def install() -> None:
    """Attach the filter to httpcore's loggers (once; idempotent)."""
    for name in _HTTPCORE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSetCookie) for f in logger.filters):
            logger.addFilter(RedactSetCookie())
