"""The completion feed against an in-memory model of Airflow's run table.

Real Airflow cannot be made to commit late, tie thousands of end dates or stop a tick mid-page on demand, so
these properties are checked here against a model of the list endpoint's documented semantics; the
integration tests check the same feed against real Airflow 2 and 3.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Literal

import pytest

from dagster_airpeer.airflow.errors import AirflowConnectionError
from dagster_airpeer.airflow.models import DagRun, RunsPage
from dagster_airpeer.feed import CompletionFeed, CursorError, FeedState

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
LATE = timedelta(minutes=5)


@dataclass
class _Row:
    id: int
    run: DagRun
    visible_from: datetime  # commit time


@dataclass
class FakeAirflow:
    """The semantics of POST /dags/~/dagRuns/list that the feed relies on."""

    now: datetime = T0
    page_cap: int = 100
    #: Airflow 3 breaks end-date ties by primary key; Airflow 2 leaves them in no promised order.
    pk_tiebreak: bool = True
    rows: list[_Row] = field(default_factory=list)
    requests: int = 0
    fail_after: int | None = None
    send_date: bool = True
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def add(
        self,
        dag_id: str,
        run_id: str,
        end: datetime,
        state: str = "success",
        commit_delay: timedelta = timedelta(0),
    ) -> None:
        run = DagRun(
            dag_id=dag_id, run_id=run_id, state=state, end_date=end, start_date=end - timedelta(seconds=5)
        )
        self.rows.append(_Row(id=len(self.rows) + 1, run=run, visible_from=end + commit_delay))

    def delete(self, dag_id: str, run_id: str) -> None:
        self.rows = [r for r in self.rows if (r.run.dag_id, r.run.run_id) != (dag_id, run_id)]

    def list_finished_runs(
        self,
        *,
        end_date_gte: datetime,
        end_date_lte: datetime | None = None,
        order_by: Literal["end_date", "id"] = "end_date",
        offset: int = 0,
        limit: int | None = None,
        dag_ids: Sequence[str] | None = None,
    ) -> RunsPage:
        self.requests += 1
        if self.fail_after is not None and self.requests > self.fail_after:
            raise AirflowConnectionError("Airflow instance 'fake' could not be reached")
        rows = [
            r
            for r in self.rows
            if r.visible_from <= self.now
            and r.run.end_date is not None
            and r.run.end_date >= end_date_gte
            and (end_date_lte is None or r.run.end_date <= end_date_lte)
        ]
        if order_by == "id":
            rows.sort(key=lambda r: r.id)
        elif self.pk_tiebreak:
            rows.sort(key=lambda r: (r.run.end_date, r.id))
        else:
            self.rng.shuffle(rows)
            rows.sort(key=lambda r: r.run.end_date)  # stable sort: ties in random order on each query
        size = min(limit or self.page_cap, self.page_cap)
        page = rows[offset : offset + size]
        return RunsPage(
            runs=tuple(r.run for r in page), total_entries=len(rows), server_time=self.server_time()
        )

    def server_time(self) -> datetime | None:
        return self.now if self.send_date else None


class StepClock:
    """A monotonic clock that advances a fixed step per reading, so time budgets stop ticks mid-read."""

    def __init__(self, step: float) -> None:
        self.t = 0.0
        self.step = step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def _drain(feed: CompletionFeed, state: FeedState, ticks: int = 200) -> tuple[list[DagRun], FeedState]:
    out: list[DagRun] = []
    for _ in range(ticks):
        result = feed.poll(FeedState.from_json(state.to_json()))  # every tick goes through the stored cursor
        out.extend(result.completions)
        state = result.state
        if result.caught_up:
            return out, state
    raise AssertionError("the feed never caught up")


def _ids(runs: list[DagRun]) -> list[tuple[str, str, datetime | None]]:
    return [(r.dag_id, r.run_id, r.end_date) for r in runs]


def test_first_tick_imports_lookback_only() -> None:
    af = FakeAirflow(now=T0 + timedelta(days=3))
    af.add("old", "r1", T0)
    af.add("new", "r2", T0 + timedelta(days=2, hours=12))
    feed = CompletionFeed(af)
    runs, _ = _drain(feed, FeedState.initial(af.now, timedelta(days=1)))
    assert _ids(runs) == [("new", "r2", T0 + timedelta(days=2, hours=12))]


def test_idle_tick_costs_one_request_and_delivers_nothing() -> None:
    af = FakeAirflow(now=T0 + timedelta(hours=1))
    for i in range(250):
        af.add(f"d{i % 7}", f"r{i}", T0 + timedelta(seconds=i))
    feed = CompletionFeed(af)
    runs, state = _drain(feed, FeedState.initial(af.now, timedelta(days=1)))
    assert len(runs) == 250
    af.now += timedelta(seconds=30)
    before = af.requests
    result = feed.poll(state)
    assert result.completions == [] and result.caught_up
    assert af.requests - before == 1
    assert result.state.seen_count == 0  # nothing left inside the late-commit window


@pytest.mark.parametrize("pk_tiebreak", [True, False], ids=["airflow3-order", "airflow2-order"])
@pytest.mark.parametrize("page_cap", [1, 7, 100])
def test_many_runs_with_one_end_date_each_once(pk_tiebreak: bool, page_cap: int) -> None:
    af = FakeAirflow(now=T0 + timedelta(hours=1), page_cap=page_cap, pk_tiebreak=pk_tiebreak)
    end = T0 + timedelta(minutes=10)
    for i in range(1000 if page_cap == 100 else 120):
        af.add(f"dag{i % 13}", f"run{i}", end)
    af.add("after", "r", end + timedelta(microseconds=1))
    af.add("before", "r", end - timedelta(microseconds=1))
    feed = CompletionFeed(af, time_budget=3, clock=StepClock(1.0))  # ~3 pages per tick
    runs, _ = _drain(feed, FeedState.initial(af.now, timedelta(days=1)), ticks=2000)
    ids = _ids(runs)
    assert len(ids) == len(set(ids)) == len(af.rows)
    assert [r.end_date for r in runs] == sorted(r.end_date for r in runs if r.end_date)


def test_late_commit_within_window_is_delivered_once() -> None:
    af = FakeAirflow(now=T0 + timedelta(minutes=10))
    af.add("a", "1", T0 + timedelta(minutes=9))
    feed = CompletionFeed(af, late_commit_window=LATE)
    runs, state = _drain(feed, FeedState.initial(af.now, timedelta(days=1)))
    assert len(runs) == 1
    # A run that ended before the one already read commits now (end 2 min ago, commit delay 2 min).
    af.add("b", "late", T0 + timedelta(minutes=8, seconds=30), commit_delay=timedelta(minutes=1, seconds=30))
    af.now += timedelta(seconds=30)
    runs2, state = _drain(feed, state)
    assert _ids(runs2) == [("b", "late", T0 + timedelta(minutes=8, seconds=30))]
    af.now += timedelta(seconds=30)
    assert _drain(feed, state)[0] == []


def test_cleared_run_that_ends_again_is_a_new_completion() -> None:
    af = FakeAirflow(now=T0 + timedelta(minutes=1))
    af.add("a", "1", T0, state="failed")
    feed = CompletionFeed(af)
    runs, state = _drain(feed, FeedState.initial(af.now, timedelta(days=1)))
    assert [r.state for r in runs] == ["failed"]
    af.delete("a", "1")  # cleared: no longer in a terminal state
    af.now += timedelta(minutes=1)
    af.add("a", "1", af.now - timedelta(seconds=1), state="success")
    runs2, _ = _drain(feed, state)
    assert [(r.run_id, r.state) for r in runs2] == [("1", "success")]


def test_without_date_header_watermark_follows_airflow_end_dates() -> None:
    af = FakeAirflow(now=T0 + timedelta(hours=2), send_date=False)
    for i in range(30):
        af.add("a", str(i), T0 + timedelta(minutes=i))
    feed = CompletionFeed(af)
    runs, state = _drain(feed, FeedState.initial(T0 - timedelta(hours=1), timedelta(0)))
    assert len(runs) == 30
    assert state.watermark == T0 + timedelta(minutes=29) - LATE
    af.now += timedelta(minutes=1)
    assert feed.poll(state).completions == []


def test_outage_mid_read_keeps_what_was_read_and_resumes() -> None:
    af = FakeAirflow(now=T0 + timedelta(hours=1), page_cap=10)
    for i in range(95):
        af.add("a", f"r{i:03}", T0 + timedelta(seconds=i))
    feed = CompletionFeed(af)
    state = FeedState.initial(af.now, timedelta(days=1))
    af.fail_after = 3
    result = feed.poll(state)
    assert result.interrupted is not None and not result.caught_up
    first = result.completions
    assert len(first) == 28  # keyset paging re-reads each page's last run: 10 + 9 + 9
    # The first request of a tick failing fails the tick and leaves the cursor alone.
    with pytest.raises(AirflowConnectionError):
        feed.poll(result.state)
    af.fail_after = None
    rest, _ = _drain(feed, result.state)
    ids = _ids(first + rest)
    assert len(ids) == len(set(ids)) == 95


def test_cursor_round_trip_and_garbage() -> None:
    state = FeedState.initial(T0, timedelta(hours=1))
    state.mark_seen(DagRun(dag_id="d", run_id="r", state="success", end_date=T0))
    state.tie_at, state.tie_offset = T0, 7
    again = FeedState.from_json(state.to_json())
    assert again == state
    for garbage in ["", "{}", "[1]", '{"v": 99}', '{"v": 1, "watermark": "2026-01-01T00:00:00"}', "not json"]:
        with pytest.raises(CursorError):
            FeedState.from_json(garbage)


@pytest.mark.parametrize("seed", range(40))
def test_random_histories_are_delivered_exactly_once(seed: int) -> None:
    """Runs arrive continuously with late commits and ties while ticks stop at random points."""
    rng = random.Random(seed)
    af = FakeAirflow(now=T0, page_cap=rng.choice([3, 10, 100]), pk_tiebreak=bool(seed % 2), rng=rng)
    feed = CompletionFeed(
        af,
        late_commit_window=LATE,
        time_budget=rng.choice([2, 5, 1000]),
        max_completions=rng.choice([5, 50, 10_000]),
        clock=StepClock(1.0),
    )
    state = FeedState.initial(af.now, timedelta(days=1))
    delivered: list[DagRun] = []
    n = 0
    for _ in range(150):
        af.now += timedelta(seconds=rng.choice([1, 5, 30, 90]))
        shared_end = af.now - timedelta(seconds=rng.randint(0, 200))
        for _ in range(rng.choice([0, 0, 1, 3, 20])):
            n += 1
            delay = timedelta(seconds=rng.randint(0, int(LATE.total_seconds()) - 1))
            end = shared_end if rng.random() < 0.5 else af.now - delay
            af.add(
                f"dag{rng.randint(0, 9)}",
                f"run{n}",
                min(end, af.now),
                rng.choice(["success", "failed"]),
                delay,
            )
        result = feed.poll(FeedState.from_json(state.to_json()))
        delivered.extend(result.completions)
        state = result.state
    af.now += LATE + timedelta(seconds=1)
    rest, state = _drain(feed, state, ticks=5000)
    delivered.extend(rest)
    ids = _ids(delivered)
    assert len(ids) == len(set(ids)), "a completion was delivered twice"
    assert set(ids) == {(r.run.dag_id, r.run.run_id, r.run.end_date) for r in af.rows}, (
        "a completion was lost"
    )
    assert state.seen_count == 0
