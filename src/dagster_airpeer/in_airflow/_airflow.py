"""Airflow's operator and DAG classes: `airflow.sdk` on Airflow 3, `airflow.models` on Airflow 2."""

from __future__ import annotations

from typing import Any

try:
    from airflow.sdk import DAG, BaseOperator
except ImportError:  # Airflow 2
    from airflow.models import DAG, BaseOperator  # type: ignore[no-redef,attr-defined,unused-ignore]

__all__ = ["DAG", "BaseOperator", "is_plain_operator"]


def is_plain_operator(task: Any) -> bool:
    """Whether `task` is one operator object (not a mapped `.expand` task, whose instances Airflow makes)."""
    return isinstance(task, BaseOperator)
