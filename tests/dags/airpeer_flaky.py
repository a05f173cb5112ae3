"""``airpeer_flaky``: succeeds, or fails when triggered with ``conf={"fail": true}`` (recovery tests)."""

from __future__ import annotations

from typing import Any

# The module name keeps the word "airflow" in this file: Airflow's DAG discovery (safe mode) skips files without it.
from airpeer_airflow_common import DAG, DAG_KWARGS, PythonOperator


def _maybe_fail(**context: Any) -> None:
    if (context["dag_run"].conf or {}).get("fail"):
        raise RuntimeError("airpeer_flaky was asked to fail")


with DAG(dag_id="airpeer_flaky", description="airpeer test DAG: fails on request", **DAG_KWARGS):
    PythonOperator(task_id="maybe_fail", python_callable=_maybe_fail, retries=0)
