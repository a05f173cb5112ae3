"""Fixtures of the reliability suites (faults, security); the Airflow stacks come from tests/conftest.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import dagster as dg
import pytest

from reliability.fake_airflow import FakeAirflow, populated_fake
from reliability.harness import seed_finished_runs, spaced_runs


@pytest.fixture
def dagster_instance() -> Iterator[dg.DagsterInstance]:
    """A Dagster instance with on-disk storage, fresh for each test."""
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def fake() -> FakeAirflow:
    return populated_fake()


@dataclass(frozen=True)
class Seeded:
    """Finished runs seeded into a shared real Airflow: their ids, and when the earliest one ended."""

    dag_id: str
    run_ids: frozenset[str]
    earliest_end: datetime


_SEEDS: dict[int, Seeded] = {}


def _seed_once(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    """60 finished runs of `airpeer_two_tasks` in a shared Airflow, ending 20 s apart over the 25 minutes
    before now - 6 min, the first 12 at one instant (a tie group). Seeded once per stack and session."""
    if id(stack) not in _SEEDS:
        prefix = f"rel_seed_{uuid.uuid4().hex[:6]}"
        last = datetime.now(timezone.utc) - timedelta(minutes=6)
        runs = spaced_runs(
            "airpeer_two_tasks", prefix, 60, end_last=last, spacing=timedelta(seconds=20), ties=12
        )
        seed_finished_runs(stack, runs, tmp_path_factory.mktemp("seed"))
        earliest = min(datetime.fromisoformat(r["end"]) for r in runs)
        _SEEDS[id(stack)] = Seeded("airpeer_two_tasks", frozenset(r["run_id"] for r in runs), earliest)
    return _SEEDS[id(stack)]


@pytest.fixture
def seeded(airflow: Any, tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    """Seeded finished runs in the shared Airflow of the `airflow` fixture (both versions)."""
    return _seed_once(airflow, tmp_path_factory)


@pytest.fixture
def seeded3(airflow3: Any, tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    """Seeded finished runs in the shared Airflow 3."""
    return _seed_once(airflow3, tmp_path_factory)
