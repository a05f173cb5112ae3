"""The seeded history of a benchmark case: which runs exist, how they ended, and when.

The manifest is the ground truth the events of each library are checked against (lost and doubled runs), and
the input of :mod:`benchmarks.seed_airflow`, which writes it into Airflow's database.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

FAILED_SHARE = 0.10
#: Seeded runs end at least this long before the sensors start, so no run ends "in the future" of a tick.
END_MARGIN = timedelta(seconds=120)
RUN_DURATION = timedelta(seconds=30)


@dataclass(frozen=True)
class SeededRun:
    """One finished DAG run (and its three task instances, written by the seeding script)."""

    dag_id: str
    run_id: str
    state: str
    logical_date: datetime
    start_date: datetime
    end_date: datetime
    #: Live cases only: when the seeder commits the run (its end date, or later for a late commit).
    commit_at: datetime | None = None


@dataclass(frozen=True)
class Manifest:
    """Every seeded run of a case, and the instant before the first of them ended (the sensors' start)."""

    runs: tuple[SeededRun, ...]
    #: Strictly before every seeded end date: both sensors start from this position.
    start: datetime

    @property
    def succeeded(self) -> set[tuple[str, str]]:
        return {(r.dag_id, r.run_id) for r in self.runs if r.state == "success"}

    @property
    def failed(self) -> set[tuple[str, str]]:
        return {(r.dag_id, r.run_id) for r in self.runs if r.state == "failed"}

    def write(self, path: Path, dag_ids: list[str], task_ids: tuple[str, ...]) -> None:
        """Write the seeding script's input (JSON)."""
        payload = {
            "dag_ids": dag_ids,
            "task_ids": list(task_ids),
            "runs": [
                [
                    r.dag_id,
                    r.run_id,
                    r.state,
                    *(d.isoformat() for d in (r.logical_date, r.start_date, r.end_date)),
                    *([r.commit_at.isoformat()] if r.commit_at is not None else []),
                ]
                for r in self.runs
            ],
        }
        path.write_text(json.dumps(payload))


def build_manifest(dag_ids: list[str], runs: int, *, ties: bool, now: datetime | None = None) -> Manifest:
    """Spread ``runs`` finished runs round-robin over ``dag_ids``; 10% of them (chosen at random) failed.

    ``ties=False``: one run ends every second, the last one END_MARGIN before ``now``. ``ties=True``: every
    run ends at the same instant, so every page boundary of a listing ordered by end date falls inside a tie.
    """
    now = now or datetime.now(timezone.utc)
    last_end = (now - END_MARGIN).replace(microsecond=0)
    first_end = last_end if ties else last_end - timedelta(seconds=runs - 1)
    failed = set(random.Random(42).sample(range(runs), int(runs * FAILED_SHARE)))
    # Logical dates are unique per DAG (Airflow 2 enforces it) and far from the end dates.
    logical_base = (now - timedelta(days=400)).replace(microsecond=0)
    seeded = []
    for i in range(runs):
        end = last_end if ties else first_end + timedelta(seconds=i)
        logical = logical_base + timedelta(minutes=i)
        seeded.append(
            SeededRun(
                dag_id=dag_ids[i % len(dag_ids)],
                run_id=f"bench__{logical.strftime('%Y%m%dT%H%M%S')}__{i:06d}",
                state="failed" if i in failed else "success",
                logical_date=logical,
                start_date=end - RUN_DURATION,
                end_date=end,
            )
        )
    return Manifest(runs=tuple(seeded), start=first_end - timedelta(seconds=1))


def build_live_manifest(
    dag_ids: list[str],
    runs: int,
    *,
    duration: timedelta,
    start: datetime,
    late_share: float,
    late_max: timedelta,
) -> Manifest:
    """``runs`` completions ending evenly over ``duration`` from ``start`` (in the future), for the live seeder.

    Each run is committed when it ends, except a ``late_share`` of them (chosen at random) committed up to
    ``late_max`` later, as a busy scheduler does: their end dates are then behind runs already visible.
    """
    rng = random.Random(43)
    failed = set(rng.sample(range(runs), int(runs * FAILED_SHARE)))
    late = set(rng.sample(range(runs), int(runs * late_share)))
    logical_base = (start - timedelta(days=400)).replace(microsecond=0)
    step = duration / max(1, runs)
    seeded = []
    for i in range(runs):
        end = start + step * i
        logical = logical_base + timedelta(minutes=i)
        delay = late_max * rng.uniform(0.1, 1.0) if i in late else timedelta(0)
        seeded.append(
            SeededRun(
                dag_id=dag_ids[i % len(dag_ids)],
                run_id=f"live__{logical.strftime('%Y%m%dT%H%M%S')}__{i:06d}",
                state="failed" if i in failed else "success",
                logical_date=logical,
                start_date=end - RUN_DURATION,
                end_date=end,
                commit_at=end + delay,
            )
        )
    return Manifest(runs=tuple(seeded), start=start - timedelta(seconds=1))
