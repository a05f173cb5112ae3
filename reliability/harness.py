"""Small builders shared by the reliability tests and the soak: peered definitions, drained sensors, seeds."""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import httpx

from dagster_airpeer import AirflowBasicAuthBackend, AirflowInstance, build_defs_from_airflow_instance
from dagster_airpeer.feed import FeedState
from dagster_airpeer.sensor import sensor_name

from .fake_airflow import FakeAirflow
from .ticker import Ticker, TickOutcome

#: The URL the in-memory fake is addressed by (loopback, so no plain-http warning; nothing listens there).
FAKE_URL = "http://127.0.0.1:9"


@dataclass
class Peered:
    """An AirflowInstance, how to build its definitions, and the sleeps its retries asked for."""

    instance: AirflowInstance
    build: Callable[[], dg.Definitions]
    sleeps: list[float]

    @property
    def sensor(self) -> str:
        return sensor_name(self.instance.name)


def peer(
    url: str,
    username: str,
    password: str,
    snapshot_dir: Path,
    *,
    name: str = "peered",
    transport: httpx.BaseTransport | None = None,
    page_size: int = 100,
    max_retries: int = 3,
    timeout: float = 10.0,
    verify: bool | str = True,
    real_sleep: bool = False,
    **defs_kwargs: Any,
) -> Peered:
    """An instance peering `url` with definitions built on demand (each build is a code location load).

    Retries do not really sleep unless `real_sleep`: the waits asked for are recorded in `sleeps` instead,
    so tests of backoff and Retry-After stay fast and can assert what was asked.
    """
    instance = AirflowInstance(
        auth_backend=AirflowBasicAuthBackend(url, username, password),
        name=name,
        page_size=page_size,
        max_retries=max_retries,
        timeout=timeout,
        verify=verify,
        transport=transport,
    )
    sleeps: list[float] = []
    if not real_sleep:
        instance._http.sleep = sleeps.append
    defs_kwargs.setdefault("lookback", timedelta(days=1))
    defs_kwargs.setdefault("late_commit_window", timedelta(minutes=5))

    def build() -> dg.Definitions:
        return build_defs_from_airflow_instance(
            airflow_instance=instance, snapshot_dir=snapshot_dir, **defs_kwargs
        )

    return Peered(instance, build, sleeps)


def peer_fake(fake: FakeAirflow, snapshot_dir: Path, **kwargs: Any) -> Peered:
    """Peer the in-memory fake; `transport` (if given) must wrap `fake.transport()`."""
    kwargs.setdefault("transport", fake.transport())
    return peer(FAKE_URL, fake.username, fake.password, snapshot_dir, **kwargs)


def drain(ticker: Ticker, defs: dg.Definitions, max_ticks: int = 20) -> list[TickOutcome]:
    """Tick until a tick reads everything Airflow had and finds nothing new; returns every outcome.

    Cursor consistency is checked on the way: every stored cursor parses and its watermark never moves back.
    """
    outcomes: list[TickOutcome] = []
    last_watermark: datetime | None = None
    for _ in range(max_ticks):
        before = ticker.cursor
        outcome = ticker.tick(defs, raise_errors=False)
        outcomes.append(outcome)
        if outcome.failed:
            assert ticker.cursor == before, "a failed tick changed the cursor"
            continue
        assert ticker.cursor is not None
        state = FeedState.from_json(ticker.cursor)
        if last_watermark is not None:
            assert state.watermark >= last_watermark, "the watermark moved back"
        last_watermark = state.watermark
        if outcome.events == 0 and state.tie_at is None and len(outcomes) > 1 and not outcomes[-2].failed:
            return outcomes
    return outcomes


# -- seeding a real Airflow ---------------------------------------------------------------------------------

_SEED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from datetime import datetime
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    rows = json.load(open(sys.argv[1]))
    table = DagRun.__table__
    columns = set(table.columns.keys())
    out = []
    for r in rows:
        start, end = datetime.fromisoformat(r["start"]), datetime.fromisoformat(r["end"])
        row = {
            "dag_id": r["dag_id"], "run_id": r["run_id"], "state": r["state"], "run_type": "manual",
            "queued_at": start, "start_date": start, "end_date": end, "conf": r.get("conf") or {},
            "updated_at": end, "logical_date": None, "run_after": start, "execution_date": start,
            "external_trigger": True, "data_interval_start": start, "data_interval_end": start,
        }
        if "execution_date" in columns:  # Airflow 2: (dag_id, execution_date) is unique
            row["execution_date"] = start
        out.append({k: v for k, v in row.items() if k in columns})
    with create_session() as session:
        session.execute(table.insert(), out)
    print(len(out))
    """
)


def seed_finished_runs(stack: Any, runs: Sequence[dict[str, Any]], work_dir: Path) -> None:
    """Insert finished runs straight into a real Airflow's database (the REST API cannot set end dates).

    Each run: dag_id, run_id, state, start, end (ISO with timezone), optional conf. Runs only, no task
    instances: the runs list does not need them. The scheduler leaves finished runs alone.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    script = work_dir / "seed_runs.py"
    script.write_text(_SEED_SCRIPT)
    data = work_dir / f"runs-{len(list(work_dir.glob('runs-*.json')))}.json"
    data.write_text(json.dumps(list(runs)))
    result = subprocess.run(
        [str(stack.python()), str(script), str(data)],
        env=stack.env,
        cwd=work_dir,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"seeding runs failed:\n{result.stdout}\n{result.stderr[-3000:]}")


def spaced_runs(
    dag_id: str, prefix: str, count: int, *, end_last: datetime, spacing: timedelta, ties: int = 0
) -> list[dict[str, Any]]:
    """`count` finished runs ending `spacing` apart up to `end_last`; the first `ties` share one end date.

    Every fifth run failed. Airflow 2 needs distinct start dates (they stand in for execution dates).
    """
    runs = []
    for i in range(count):
        end = end_last - spacing * (count - 1 - max(i, ties - 1 if i < ties else i))
        start = end_last - timedelta(hours=2) + timedelta(milliseconds=i)
        runs.append(
            {
                "dag_id": dag_id,
                "run_id": f"{prefix}_{i:04d}",
                "state": "failed" if i % 5 == 4 else "success",
                "start": start.astimezone(timezone.utc).isoformat(),
                "end": end.astimezone(timezone.utc).isoformat(),
            }
        )
    return runs


__all__ = ["FAKE_URL", "Peered", "drain", "peer", "peer_fake", "seed_finished_runs", "spaced_runs"]
