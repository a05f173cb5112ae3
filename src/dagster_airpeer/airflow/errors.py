"""Errors raised by the Airflow client.

Every message names the Airflow instance and what the user can do about it. None of them ever contains a
password or a token: they are built from the instance name, the URL and the HTTP status only.
"""

from __future__ import annotations


class AirflowError(Exception):
    """Base class of every error raised while talking to Airflow."""


class AirflowConfigError(AirflowError):
    """A setting given to airpeer is invalid (names the setting and what was expected)."""


class AirflowConnectionError(AirflowError):
    """Airflow could not be reached (connection refused, timeouts, 5xx) after the configured retries."""


class AirflowAuthError(AirflowError):
    """Airflow refused the credentials (401/403 after one renewal of the token)."""


class AirflowNotFoundError(AirflowError):
    """Airflow answered 404 for a DAG, a run or an endpoint."""


class AirflowResponseError(AirflowError):
    """Airflow answered something airpeer cannot read: not JSON, a missing field, a wrong type."""


class AirflowVersionError(AirflowError):
    """The server does not look like Airflow 2 (REST v1) or Airflow 3 (REST v2)."""


class AirflowTimeoutError(AirflowError, TimeoutError):
    """A DAG run did not finish within the time given to `AirflowInstance.wait_for_dag_run`."""
