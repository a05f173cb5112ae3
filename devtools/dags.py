"""Where the test DAGs live and which DAG ids they define (shared by fixtures, demos and benchmarks)."""

from __future__ import annotations

from pathlib import Path

from devtools.airflow_stack import ROOT

__all__ = ["TEST_DAGS_DIR", "TEST_DAG_IDS"]

TEST_DAGS_DIR: Path = ROOT / "tests" / "dags"
"""Test DAGs parsing on both Airflow 2.11 and 3.3 (schedule None, unpaused, tags ["airpeer", "test"])."""

TEST_DAG_IDS: tuple[str, ...] = (
    "airpeer_ok",
    "airpeer_fail",
    "airpeer_two_tasks",
    "airpeer.dotted-id",
    "airpeer_dataset_producer",
    "airpeer_dataset_consumer",
)
"""``airpeer_ok`` succeeds, ``airpeer_fail`` fails (no retries), ``airpeer_two_tasks`` runs two tasks in
sequence, ``airpeer.dotted-id`` succeeds and has a dot and a dash in its id; ``airpeer_dataset_producer``
updates a dataset/asset through a task outlet and ``airpeer_dataset_consumer`` is scheduled on it (not None)."""
