"""The task-instance feed against an in-memory Airflow that lists task instances in no order at all (as
Airflow 2's batch endpoint does): pages, equal end dates, late commits, clears, outages, restarts."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from dagster_airpeer.airflow.errors import AirflowConnectionError
from dagster_airpeer.airflow.models import TaskInstance, TaskInstancesPage
from dagster_airpeer.feed import FeedState
from dagster_airpeer.feed.poll import InlineExecutor
from dagster_airpeer.feed.tasks import TaskCompletionFeed, task_instance_digest

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
LATE = timedelta(minutes=5)


@dataclass
class _Row:
    ti: TaskInstance
    visible_at: datetime


class FakeAirflow:
    """Task instances with a commit time; listings filter like Airflow and return rows in an arbitrary order
    (stable per query, like a database scan without ORDER BY, or shuffled on every request)."""

    def __init__(self, *, page_cap: int = 100, shuffle: bool = False, seed: int = 0) -> None:
        self.now = T0
        self.rows: dict[tuple[str, str, str, int], _Row] = {}
        self.page_cap = page_cap
        self.shuffle = shuffle
        self.rng = random.Random(seed)
        self.requests = 0
        self.fail_after: int | None = None

    def complete(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        end: datetime,
        *,
        state: str = "success",
        map_index: int = -1,
        commit_delay: timedelta = timedelta(0),
    ) -> TaskInstance:
        key = (dag_id, run_id, task_id, map_index)
        previous = self.rows.get(key)
        try_number = (previous.ti.try_number or 0) + 1 if previous is not None else 1
        ti = TaskInstance(
            dag_id=dag_id,
            run_id=run_id,
            task_id=task_id,
            map_index=map_index,
            state=state,
            try_number=try_number,
            end_date=end,
        )
        self.rows[key] = _Row(ti, end + commit_delay)
        return ti

    def clear(self, key: tuple[str, str, str, int]) -> None:
        row = self.rows[key]
        self.rows[key] = _Row(row.ti.model_copy(update={"state": None}), row.visible_at)

    def server_time(self) -> datetime | None:
        return self.now

    def list_finished_task_instances(
        self,
        *,
        end_date_gte: datetime,
        end_date_lte: datetime | None = None,
        dag_ids: Sequence[str] | None = None,
        offset: int = 0,
        limit: int | None = None,
        order_by: str | None = None,
    ) -> TaskInstancesPage:
        self.requests += 1
        if self.fail_after is not None and self.requests > self.fail_after:
            raise AirflowConnectionError("Airflow is down (fake)")
        found = [
            row.ti
            for row in self.rows.values()
            if row.visible_at <= self.now
            and row.ti.state in ("success", "failed")
            and row.ti.end_date is not None
            and end_date_gte <= row.ti.end_date
            and (end_date_lte is None or row.ti.end_date <= end_date_lte)
            and (dag_ids is None or row.ti.dag_id in dag_ids)
        ]
        if self.shuffle:
            self.rng.shuffle(found)
        else:
            found.sort(key=task_instance_digest)
        size = min(limit or 100, self.page_cap)
        return TaskInstancesPage(
            task_instances=tuple(found[offset : offset + size]),
            total_entries=len(found),
            server_time=self.now,
        )


def _feed(af: FakeAirflow, **kwargs: Any) -> TaskCompletionFeed:
    kwargs.setdefault("executor", InlineExecutor())
    kwargs.setdefault("late_commit_window", LATE)
    return TaskCompletionFeed(af, **kwargs)


def _ids(tis: Sequence[TaskInstance]) -> Counter[str]:
    return Counter(
        f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{ti.map_index}/{task_instance_digest(ti)}" for ti in tis
    )


def _drain(
    feed: TaskCompletionFeed, state: FeedState, ticks: int = 100
) -> tuple[list[TaskInstance], FeedState]:
    out: list[TaskInstance] = []
    for _ in range(ticks):
        result = feed.poll(state)
        out.extend(result.completions)
        state = result.state
        if result.caught_up and not result.completions:
            break
    return out, state


def test_idle_tick_is_one_request() -> None:
    af = FakeAirflow()
    af.now = T0 + timedelta(hours=1)
    feed = _feed(af)
    state = FeedState.initial(af.now, timedelta(minutes=10))
    first = feed.poll(state)  # far behind Airflow's clock: one slice per worker, and the open end
    assert first.completions == [] and first.caught_up and first.requests == 5
    af.now += timedelta(seconds=30)
    result = feed.poll(first.state)
    assert result.completions == [] and result.caught_up and result.requests == 1


def test_many_task_instances_in_no_order_are_each_delivered_once() -> None:
    af = FakeAirflow(shuffle=True, page_cap=20, seed=3)
    for i in range(1000):
        af.complete("d", f"r{i // 3}", f"t{i % 3}", T0 + timedelta(milliseconds=137 * i))
    af.now = T0 + timedelta(minutes=3)
    feed = _feed(af, page_size=20)
    out, _ = _drain(feed, FeedState.initial(T0, timedelta(0)))
    assert _ids(out) == _ids([row.ti for row in af.rows.values()])
    assert max(_ids(out).values()) == 1
    # Pages, not task instances: 1000 rows of at most 20 per page.
    assert af.requests < 1000 / 20 * 4


@pytest.mark.parametrize("parallel", [1, 4])
def test_more_than_a_page_ending_at_one_microsecond(parallel: int) -> None:
    af = FakeAirflow(page_cap=10)
    end = T0 + timedelta(seconds=5)
    for i in range(57):
        af.complete("d", f"r{i}", "t", end)
    af.complete("d", "before", "t", end - timedelta(microseconds=1))
    af.complete("d", "after", "t", end + timedelta(microseconds=1))
    af.now = T0 + timedelta(minutes=1)
    executor = InlineExecutor() if parallel == 1 else None
    feed = TaskCompletionFeed(af, late_commit_window=LATE, page_size=10, parallel=parallel, executor=executor)
    out, _ = _drain(feed, FeedState.initial(T0, timedelta(0)))
    assert _ids(out) == _ids([row.ti for row in af.rows.values()])


def test_a_crowded_microsecond_listed_differently_each_time_stops_the_feed_there_without_loss() -> None:
    af = FakeAirflow(page_cap=10, shuffle=True, seed=1)
    end = T0 + timedelta(seconds=5)
    af.complete("d", "early", "t", end - timedelta(seconds=1))
    for i in range(40):
        af.complete("d", f"r{i}", "t", end)
    af.now = T0 + timedelta(minutes=1)
    feed = _feed(af, page_size=10)
    result = feed.poll(FeedState.initial(T0, timedelta(0)))
    assert [ti.run_id for ti in result.completions] == ["early"]
    assert not result.caught_up and result.interrupted is not None
    assert "maximum_page_limit" in str(result.interrupted)
    assert result.state.position <= end
    # Airflow settles on one order: everything is delivered, once.
    af.shuffle = False
    out, _ = _drain(feed, result.state)
    assert _ids([*result.completions, *out]) == _ids([row.ti for row in af.rows.values()])


def test_retry_is_one_completion_and_clear_and_rerun_is_a_new_one() -> None:
    af = FakeAirflow()
    feed = _feed(af)
    state = FeedState.initial(T0, timedelta(0))
    # A failed try that Airflow retries is up_for_retry: not listed. The try that succeeds is.
    af.complete("d", "r", "t", T0 + timedelta(seconds=1), state="up_for_retry")
    af.complete("d", "r", "t", T0 + timedelta(seconds=9))
    af.now = T0 + timedelta(seconds=20)
    first, state = _drain(feed, state)
    assert [(ti.try_number, ti.state) for ti in first] == [(2, "success")]
    af.clear(("d", "r", "t", -1))
    af.now += timedelta(seconds=30)
    cleared, state = _drain(feed, state)
    assert cleared == []
    af.complete("d", "r", "t", af.now - timedelta(seconds=1))
    af.now += timedelta(seconds=30)
    rerun, _ = _drain(feed, state)
    assert [(ti.try_number, ti.state) for ti in rerun] == [(3, "success")]


def test_late_commit_in_the_counted_part_of_the_window_is_delivered_once() -> None:
    af = FakeAirflow(page_cap=10)
    # Counts for what ended over 30 s before the last tick (an option: by default the window is re-read).
    feed = _feed(af, page_size=10, full_reread_window=timedelta(seconds=30))
    state = FeedState.initial(T0, timedelta(0))
    for i in range(200):
        af.complete("d", f"r{i}", "t", T0 + timedelta(milliseconds=500 * i))
    late = af.complete("d", "late", "t", T0 + timedelta(seconds=7), commit_delay=timedelta(minutes=3))
    af.now = T0 + timedelta(minutes=2)
    out, state = _drain(feed, state)
    assert len(out) == 200
    af.now = T0 + timedelta(minutes=4)  # the late one commits, 3.5 minutes after it ended
    requests = af.requests
    more, state = _drain(feed, state)
    assert _ids(more) == _ids([late])
    # The settled part was checked by counts, and only the slice that changed was read again.
    assert af.requests - requests < 40  # reading the 200 again costs about 40 requests
    af.now = T0 + timedelta(minutes=30)
    rest, _ = _drain(feed, state)
    assert rest == []


def test_dag_filter_reads_only_those_dags_and_a_new_dag_in_the_window_is_read_once() -> None:
    af = FakeAirflow()
    feed = _feed(af)
    state = FeedState.initial(T0, timedelta(0))
    af.complete("a", "r", "t", T0 + timedelta(seconds=1))
    b = af.complete("b", "r", "t", T0 + timedelta(seconds=2))
    af.now = T0 + timedelta(seconds=40)
    result = feed.poll(state, dag_ids=["a"])
    assert [ti.dag_id for ti in result.completions] == ["a"]
    again = feed.poll(result.state, dag_ids=["a", "b"])
    assert _ids(again.completions) == _ids([b])
    assert feed.poll(again.state, dag_ids=["a", "b"]).completions == []


@pytest.mark.parametrize("fail_after", [1, 2, 3, 5, 8])
def test_outage_mid_tick_loses_and_doubles_nothing(fail_after: int) -> None:
    af = FakeAirflow(page_cap=10, shuffle=True, seed=fail_after)
    for i in range(150):
        af.complete("d", f"r{i}", "t", T0 + timedelta(milliseconds=333 * i))
    af.now = T0 + timedelta(minutes=2)
    feed = _feed(af, page_size=10)
    state = FeedState.initial(T0, timedelta(0))
    out: list[TaskInstance] = []
    af.fail_after = fail_after
    result = feed.poll(state)
    out.extend(result.completions)
    af.fail_after = None
    rest, _ = _drain(feed, FeedState.from_json(result.state.to_json()))
    assert _ids([*out, *rest]) == _ids([row.ti for row in af.rows.values()])


def test_a_clear_and_a_late_commit_in_one_window_are_both_seen() -> None:
    af = FakeAirflow(page_cap=10)
    feed = _feed(af, page_size=10)
    state = FeedState.initial(T0, timedelta(0))
    for i in range(50):
        af.complete("d", f"r{i}", "t", T0 + timedelta(seconds=i))
    late = af.complete("d", "late", "t", T0 + timedelta(seconds=20), commit_delay=timedelta(minutes=2))
    af.now = T0 + timedelta(minutes=1, seconds=30)
    out, state = _drain(feed, state)
    assert len(out) == 50
    # Between two ticks one task instance is cleared and the late one commits: the count is the same.
    af.clear(("d", "r3", "t", -1))
    af.now = T0 + timedelta(minutes=2, seconds=30)
    more, _ = _drain(feed, state)
    assert _ids(more) == _ids([late])


def _random_history(seed: int, parallel: int) -> None:
    rng = random.Random(seed)
    # Listed in an arbitrary order that a repeated query keeps (a scan without ORDER BY): crowded instants
    # are read by offset pages, which need that much (test_a_crowded_microsecond_... shows the rest).
    af = FakeAirflow(page_cap=rng.choice([5, 10, 30]), seed=seed)
    clock = [0.0]

    def tick_clock() -> float:
        clock[0] += rng.choice([0.0, 0.0, 0.5, 3.0])
        return clock[0]

    executor = InlineExecutor() if parallel == 1 else None
    feed = TaskCompletionFeed(
        af,
        late_commit_window=LATE,
        page_size=af.page_cap,
        parallel=parallel,
        executor=executor,
        time_budget=rng.choice([1.0, 5.0, 100.0]),
        max_completions=rng.choice([7, 50, 10_000]),
        clock=tick_clock,
    )
    state = FeedState.initial(T0, timedelta(0))
    delivered: list[TaskInstance] = []
    completions: list[TaskInstance] = []
    for step in range(60):
        af.now += timedelta(seconds=rng.choice([1, 5, 20, 40]))
        for _ in range(rng.choice([0, 3, 10, 40])):
            run = f"r{rng.randrange(30)}"
            task = f"t{rng.randrange(4)}"
            end = af.now - timedelta(seconds=rng.choice([0, 1, 2]), microseconds=rng.choice([0, 0, 7, 99]))
            delay = timedelta(seconds=rng.choice([0, 0, 0, 10, 90]))
            state_name = "success" if rng.random() < 0.85 else "failed"
            completions.append(
                af.complete(f"d{rng.randrange(3)}", run, task, end, state=state_name, commit_delay=delay)
            )
        if rng.random() < 0.1 and af.rows:
            af.clear(rng.choice(sorted(af.rows)))
        af.fail_after = af.requests + rng.randrange(1, 6) if rng.random() < 0.15 else None
        try:
            result = feed.poll(state)
        except AirflowConnectionError:
            continue
        finally:
            af.fail_after = None
        delivered.extend(result.completions)
        # A restart between ticks: the cursor goes through JSON.
        state = FeedState.from_json(result.state.to_json()) if step % 7 == 0 else result.state
    # A tiny budget may leave the feed far behind: a restart with a roomy one catches up.
    af.now += timedelta(minutes=30)
    roomy = TaskCompletionFeed(
        af, late_commit_window=LATE, page_size=af.page_cap, parallel=parallel, executor=executor
    )
    rest, _ = _drain(roomy, FeedState.from_json(state.to_json()), ticks=50)
    delivered.extend(rest)
    counts = _ids(delivered)
    assert max(counts.values(), default=1) == 1, "a task instance completion was delivered twice"
    # What Airflow still lists, and ended after the first tick's lookback (the sensor starts at T0).
    still_there = [
        row.ti
        for row in af.rows.values()
        if row.ti.state in ("success", "failed") and row.ti.end_date is not None and row.ti.end_date >= T0
    ]
    missing = _ids(still_there) - counts
    assert not missing, f"lost: {sorted(missing)[:5]}"
    assert set(counts) <= set(_ids(completions)), "delivered a completion that never was"


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("parallel", [1, 4])
def test_random_histories_are_delivered_exactly_once(seed: int, parallel: int) -> None:
    _random_history(seed, parallel)
