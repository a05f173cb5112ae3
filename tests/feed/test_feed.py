"""The completion feed against an in-memory model of Airflow's run table.

Real Airflow cannot be made to commit late, tie thousands of end dates or stop a tick mid-page on demand, so
these properties are checked here against a model of the list endpoint's documented semantics; the
integration tests check the same feed against real Airflow 2 and 3.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import pytest

from dagster_airpeer.airflow.errors import AirflowConnectionError
from dagster_airpeer.airflow.models import DagRun, RunsPage
from dagster_airpeer.feed import CompletionFeed, CursorError, FeedState, InlineExecutor

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
LATE = timedelta(minutes=5)
#: The feed's default `full_reread_window`: runs that commit later than this after their end are found by counts.
FRESH = timedelta(seconds=30)


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
    #: Called with the request's number before it is answered (to change the table between two pages).
    on_request: Callable[[int], None] | None = None
    send_date: bool = True
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    #: Rows sorted by (end date, id), so a request costs what its range holds, not the whole table.
    _index: list[tuple[datetime, int, _Row]] = field(default_factory=list)
    _next_id: int = 1

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
        row = _Row(id=self._next_id, run=run, visible_from=end + commit_delay)
        self._next_id += 1
        self.rows.append(row)
        bisect.insort(self._index, (end, row.id, row), key=lambda item: (item[0], item[1]))

    def delete(self, dag_id: str, run_id: str) -> None:
        self.rows = [r for r in self.rows if (r.run.dag_id, r.run.run_id) != (dag_id, run_id)]
        self._index = [i for i in self._index if (i[2].run.dag_id, i[2].run.run_id) != (dag_id, run_id)]

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
        if self.on_request is not None:
            self.on_request(self.requests)
        lo = bisect.bisect_left(self._index, (end_date_gte, 0), key=lambda item: (item[0], item[1]))
        hi = (
            len(self._index)
            if end_date_lte is None
            else bisect.bisect_right(
                self._index, (end_date_lte, math.inf), key=lambda item: (item[0], item[1])
            )
        )
        rows = [row for _, _, row in self._index[lo:hi] if row.visible_from <= self.now]
        size = min(limit or self.page_cap, self.page_cap)
        if order_by == "id":
            rows.sort(key=lambda r: r.id)
        elif not self.pk_tiebreak:
            # Ties in a random order on each query; only the groups the page touches need shuffling.
            a, b = offset, min(offset + size, len(rows))
            while 0 < a < len(rows) and rows[a - 1].run.end_date == rows[a].run.end_date:
                a -= 1
            while 0 < b < len(rows) and rows[b].run.end_date == rows[b - 1].run.end_date:
                b += 1
            segment: list[_Row] = []
            for _, group in itertools.groupby(rows[a:b], key=lambda r: r.run.end_date):
                members = list(group)
                self.rng.shuffle(members)
                segment.extend(members)
            rows[a:b] = segment
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


def _feed(af: FakeAirflow, **kwargs: Any) -> CompletionFeed:
    """The feed over the fake, with requests run one at a time in a fixed order (the fake is not thread-safe)."""
    return CompletionFeed(af, executor=InlineExecutor(), **kwargs)


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
    feed = _feed(af)
    runs, _ = _drain(feed, FeedState.initial(af.now, timedelta(days=1)))
    assert _ids(runs) == [("new", "r2", T0 + timedelta(days=2, hours=12))]


def test_idle_tick_costs_one_request_and_delivers_nothing() -> None:
    af = FakeAirflow(now=T0 + timedelta(hours=1))
    for i in range(250):
        af.add(f"d{i % 7}", f"r{i}", T0 + timedelta(seconds=i))
    feed = _feed(af)
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
    feed = _feed(af, time_budget=3, clock=StepClock(1.0))  # ~3 pages per tick
    runs, _ = _drain(feed, FeedState.initial(af.now, timedelta(days=1)), ticks=2000)
    ids = _ids(runs)
    assert len(ids) == len(set(ids)) == len(af.rows)
    assert [r.end_date for r in runs] == sorted(r.end_date for r in runs if r.end_date)


def test_late_commit_within_window_is_delivered_once() -> None:
    af = FakeAirflow(now=T0 + timedelta(minutes=10))
    af.add("a", "1", T0 + timedelta(minutes=9))
    feed = _feed(af, late_commit_window=LATE)
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
    feed = _feed(af)
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
    feed = _feed(af)
    runs, state = _drain(feed, FeedState.initial(T0 - timedelta(hours=1), timedelta(0)))
    assert len(runs) == 30
    assert state.watermark == T0 + timedelta(minutes=29) - LATE
    af.now += timedelta(minutes=1)
    assert feed.poll(state).completions == []


def test_outage_mid_read_keeps_what_was_read_and_resumes() -> None:
    af = FakeAirflow(now=T0 + timedelta(hours=1), page_cap=10)
    for i in range(95):
        af.add("a", f"r{i:03}", T0 + timedelta(seconds=i))
    feed = _feed(af, parallel=1)
    state = FeedState.initial(af.now, timedelta(days=1))
    af.fail_after = 3
    result = feed.poll(state)
    assert result.interrupted is not None and not result.caught_up
    first = result.completions
    # What the pages read before the failure form a prefix in end-date order, and it is delivered.
    assert 0 < len(first) < 95
    assert [r.run_id for r in first] == [f"r{i:03}" for i in range(len(first))]
    # The first request of a tick failing fails the tick and leaves the cursor alone.
    with pytest.raises(AirflowConnectionError):
        feed.poll(result.state)
    af.fail_after = None
    rest, _ = _drain(feed, result.state)
    ids = _ids(first + rest)
    assert len(ids) == len(set(ids)) == 95


def _tied(af: FakeAirflow, count: int, end: datetime) -> None:
    for i in range(count):
        af.add(f"dag{i % 13}", f"run{i}", end)


def test_idle_tick_after_a_large_recent_tie_costs_a_few_requests() -> None:
    """10,000 runs that share one end date inside the late-commit window are not read again every tick."""
    af = FakeAirflow(now=T0 + timedelta(minutes=2))
    _tied(af, 10_000, T0 + timedelta(minutes=1))
    runs, state = _drain(_feed(af), FeedState.initial(af.now, timedelta(hours=1)))
    assert len(runs) == 10_000
    returned: list[int] = []
    original = af.list_finished_runs

    def record(**kwargs: Any) -> RunsPage:
        page = original(**kwargs)
        returned.append(len(page.runs))
        return page

    af.list_finished_runs = record  # type: ignore[method-assign]
    for _ in range(3):  # still inside the window: the group is checked by its count, not re-read
        af.now += timedelta(seconds=30)
        before, returned[:] = af.requests, []
        result = _feed(af).poll(state)
        assert result.completions == [] and result.caught_up
        assert af.requests - before <= 3
        # The tick knows the group from its cursor: it counts it from the start, no page full of it is read.
        assert sum(returned) <= 1
        state = result.state
    # A run joining the group (a late commit at that very instant) changes its count: it is read again.
    af.add("late", "joined", T0 + timedelta(minutes=1))
    result = _feed(af).poll(state)
    assert _ids(result.completions) == [("late", "joined", T0 + timedelta(minutes=1))]


@pytest.mark.parametrize("parallel", [1, 4])
def test_tick_stops_inside_a_recent_tie_and_the_next_resumes_there(parallel: int) -> None:
    af = FakeAirflow(now=T0 + timedelta(minutes=2))
    _tied(af, 3000, T0 + timedelta(minutes=1))
    af.add("after", "r", T0 + timedelta(minutes=1, seconds=1))
    feed = _feed(af, parallel=parallel, time_budget=5, clock=StepClock(1.0))
    result = feed.poll(FeedState.initial(af.now, timedelta(hours=1)))
    first = result.completions
    assert 0 < len(first) < 3000 and not result.caught_up
    assert result.state.tie_at == T0 + timedelta(minutes=1) and result.state.tie_anchor is not None
    # The group is recent, so the watermark stays before it; the next tick re-reads that gap, then goes on
    # from the run it stopped at instead of reading the group from its start.
    before = af.requests
    result2 = feed.poll(result.state)
    assert af.requests - before <= result.requests + 2
    rest, _ = _drain(feed, result2.state)
    ids = _ids(first + result2.completions + rest)
    assert len(ids) == len(set(ids)) == 3001


@pytest.mark.parametrize("parallel", [1, 4])
@pytest.mark.parametrize("delete_at", [2, 3, 5, 8])
def test_runs_deleted_while_a_tie_is_paged_make_no_run_skipped(parallel: int, delete_at: int) -> None:
    """Deleting runs shifts the offsets of those after them; the overlap check catches it."""
    end = T0 + timedelta(minutes=1)
    af = FakeAirflow(now=T0 + timedelta(minutes=2), page_cap=10)
    _tied(af, 95, end)

    def delete_some(request: int) -> None:
        if request == delete_at:
            for i in (0, 1, 2, 40):
                af.delete(f"dag{i % 13}", f"run{i}")

    af.on_request = delete_some
    feed = _feed(af, parallel=parallel, page_size=10, time_budget=3, clock=StepClock(1.0))
    runs, _ = _drain(feed, FeedState.initial(af.now, timedelta(hours=1)))
    ids = _ids(runs)
    assert len(ids) == len(set(ids))
    remaining = {(r.run.dag_id, r.run.run_id, r.run.end_date) for r in af.rows}
    assert remaining <= set(ids)


def test_pages_go_out_concurrently_and_arrive_in_order() -> None:
    """With real threads: several requests in flight, never more than `parallel`, runs in end-date order."""
    af = FakeAirflow(now=T0 + timedelta(hours=1))
    for i in range(1000):
        af.add(f"d{i % 7}", f"r{i:04}", T0 + timedelta(seconds=i))
    lock = threading.Lock()
    in_flight = peak = 0

    class Slow:
        def list_finished_runs(self, **kwargs: Any) -> RunsPage:
            nonlocal in_flight, peak
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
            try:
                time.sleep(0.01)
                with lock:
                    return af.list_finished_runs(**kwargs)
            finally:
                with lock:
                    in_flight -= 1

        def server_time(self) -> datetime | None:
            return af.server_time()

    feed = CompletionFeed(Slow(), parallel=3)
    result = feed.poll(FeedState.initial(af.now, timedelta(days=1)))
    assert result.caught_up
    assert [r.run_id for r in result.completions] == [f"r{i:04}" for i in range(1000)]
    assert 1 < peak <= 3
    assert result.requests <= 16  # about one request per 100 runs, not one per run or per DAG


def test_first_tick_far_behind_starts_with_one_slice_per_worker() -> None:
    af = FakeAirflow(now=T0 + timedelta(hours=7))
    for i in range(400):
        af.add("d", f"r{i}", T0 + timedelta(minutes=i))
    seen: list[datetime] = []
    feed = _feed(af, parallel=4)
    original = af.list_finished_runs

    def record(**kwargs: Any) -> RunsPage:
        seen.append(kwargs["end_date_gte"])
        return original(**kwargs)

    af.list_finished_runs = record  # type: ignore[method-assign]
    result = feed.poll(FeedState.initial(af.now, timedelta(hours=8)))
    assert result.caught_up and len(result.completions) == 400
    assert len(set(seen[:4])) == 4  # the first four requests start at four different instants


@pytest.mark.parametrize("fail_after", range(1, 16))
def test_outage_during_concurrent_pages_loses_and_doubles_nothing(fail_after: int) -> None:
    af = FakeAirflow(now=T0 + timedelta(minutes=3), page_cap=10)
    for i in range(95):
        af.add("a", f"r{i:03}", T0 + timedelta(seconds=i))
    _assert_outage_loses_and_doubles_nothing(
        af, _feed(af, page_size=10), FeedState.initial(af.now, timedelta(hours=1)), fail_after, 95
    )


def _assert_outage_loses_and_doubles_nothing(
    af: FakeAirflow, feed: CompletionFeed, state: FeedState, fail_after: int, count: int
) -> None:
    """Airflow stops answering after `fail_after` requests of a tick; the ticks after it deliver the rest."""
    af.fail_after = fail_after
    delivered: list[DagRun] = []
    try:
        result = feed.poll(state, on_completions=delivered.extend)
    except AirflowConnectionError:
        first, after = [], state
        assert delivered == []
    else:
        first, after = result.completions, result.state
        assert delivered == first
        assert [r.run_id for r in first] == sorted(r.run_id for r in first)  # a prefix, in end-date order
    af.fail_after = None
    rest, _ = _drain(feed, after)
    ids = _ids(first + rest)
    assert len(ids) == len(set(ids)) == count


def test_cursor_round_trip_and_garbage() -> None:
    state = FeedState.initial(T0, timedelta(hours=1))
    state.mark_seen(DagRun(dag_id="d", run_id="r", state="success", end_date=T0))
    state.stop_in_tie(T0, 7, "anchor-digest")
    again = FeedState.from_json(state.to_json())
    assert again == state
    # A cursor from before anchors were kept: its offset cannot be checked, so the group is read again.
    old = FeedState.from_json(state.to_json().replace(',"anchor-digest"]', "]"))
    assert (old.tie_at, old.tie_offset, old.tie_anchor) == (T0, 0, None)
    for garbage in ["", "{}", "[1]", '{"v": 99}', '{"v": 1, "watermark": "2026-01-01T00:00:00"}', "not json"]:
        with pytest.raises(CursorError):
            FeedState.from_json(garbage)


def _random_history(seed: int, *, parallel: int, deletions: bool) -> None:
    """Runs arrive continuously with late commits and ties while ticks stop at random points.

    With `deletions`, runs are also deleted or cleared now and then, and pages are read several at a time
    (the fake answers them one after the other, in a fixed order). A deleted run may or may not have been
    delivered; every run still in Airflow at the end must have been delivered exactly once.

    A part of the window is skipped when Airflow counts as many runs in it as were delivered there (minus
    those found gone). That is exact unless, between two checks of it, a run leaves it while another one joins
    it (docs/cursor.md, "Counts"). Runs join a counted part only by committing more than `FRESH` after their
    end: without deletions, commit delays go up to the whole late-commit window; with deletions, up to
    `FRESH` (late commits into counted parts with deletions are tested on their own below). Groups of tied
    runs are counted in the recent part too, and this fake's whole-second end dates let late runs join a
    group, so runs are deleted only where every run ending at that instant is visible and delivered, and no
    run joins an instant after a deletion there.
    """
    rng = random.Random(seed)
    caps = [2, 3, 10, 100] if deletions else [1, 3, 10, 100]
    af = FakeAirflow(now=T0, page_cap=rng.choice(caps), pk_tiebreak=bool(seed % 2), rng=rng)
    feed = _feed(
        af,
        late_commit_window=LATE,
        time_budget=rng.choice([2, 5, 1000]),
        max_completions=rng.choice([5, 50, 10_000]),
        clock=StepClock(1.0),
        parallel=parallel,
    )
    state = FeedState.initial(af.now, timedelta(days=1))
    delivered: list[DagRun] = []
    deleted: set[tuple[str, str, datetime | None]] = set()
    closed: set[datetime | None] = set()  # instants a run was deleted at
    n = 0
    for _ in range(150):
        af.now += timedelta(seconds=rng.choice([1, 5, 30, 90]))
        # A run added now that ended `x` ago is a commit `x` late, whatever its delay says.
        shared_end = af.now - timedelta(
            seconds=rng.randint(0, int(FRESH.total_seconds()) - 1 if deletions else 200)
        )
        batch = rng.choice([0, 0, 1, 3, 20, 250 if deletions else 20])
        for _ in range(batch):
            n += 1
            delay = timedelta(seconds=rng.randint(0, int((FRESH if deletions else LATE).total_seconds()) - 1))
            end = shared_end if rng.random() < 0.5 else af.now - delay
            if end in closed:
                end -= timedelta(microseconds=rng.randint(1, 999))
            af.add(
                f"dag{rng.randint(0, 9)}",
                f"run{n}",
                min(end, af.now),
                rng.choice(["success", "failed"]),
                delay,
            )
        if deletions and af.rows:
            got = set(_ids(delivered))
            settled: dict[datetime | None, bool] = {}
            for r in af.rows:
                done = r.visible_from <= af.now and (r.run.dag_id, r.run.run_id, r.run.end_date) in got
                settled[r.run.end_date] = settled.get(r.run.end_date, True) and done
            for _ in range(rng.choice([0, 0, 1, 5])):
                if not af.rows:
                    break
                row = rng.choice(af.rows)
                if settled.get(row.run.end_date):
                    deleted.add((row.run.dag_id, row.run.run_id, row.run.end_date))
                    closed.add(row.run.end_date)
                    af.delete(row.run.dag_id, row.run.run_id)
        result = feed.poll(FeedState.from_json(state.to_json()))
        delivered.extend(result.completions)
        state = result.state
    af.now += LATE + timedelta(seconds=1)
    rest, state = _drain(feed, state, ticks=5000)
    delivered.extend(rest)
    ids = _ids(delivered)
    assert len(ids) == len(set(ids)), "a completion was delivered twice"
    remaining = {(r.run.dag_id, r.run.run_id, r.run.end_date) for r in af.rows}
    assert remaining <= set(ids), "a completion was lost"
    assert set(ids) <= remaining | deleted
    assert state.seen_count == 0


@pytest.mark.parametrize("parallel", [1, 4])
@pytest.mark.parametrize("seed", range(40))
def test_random_histories_are_delivered_exactly_once(seed: int, parallel: int) -> None:
    _random_history(seed, parallel=parallel, deletions=False)


@pytest.mark.parametrize("seed", range(40))
def test_random_histories_with_deletions_and_large_ties(seed: int) -> None:
    _random_history(seed, parallel=4, deletions=True)


# ---------------------------------------------------------------------------------------- range spans


def _spread(af: FakeAirflow, count: int, step: timedelta) -> None:
    for i in range(count):
        af.add(f"d{i % 7}", f"r{i:04}", T0 + step * i)


@pytest.mark.parametrize("extra_s", [0, 10, 60, 150])
def test_rest_of_a_closed_span_costs_about_one_request_per_page(extra_s: int) -> None:
    """1000 runs, one a second, first tick far behind: four slices, then the rest of each one by id, all at once."""
    af = FakeAirflow(now=T0 + timedelta(seconds=999 + 120 + extra_s))
    _spread(af, 1000, timedelta(seconds=1))
    batches: list[int] = []
    result = _feed(af, parallel=4).poll(
        FeedState.initial(af.now, af.now - (T0 - timedelta(seconds=60))),
        on_completions=lambda runs: batches.append(len(runs)),
    )
    assert result.caught_up
    assert [r.run_id for r in result.completions] == [f"r{i:04}" for i in range(1000)]
    # 10 pages of 100 at least; each of the four slices may end with a partly filled page.
    assert result.requests <= 13
    # Completions are handed over as their spans are settled, not all at the end of the tick.
    assert len(batches) > 1 and sum(batches) == 1000


def test_range_span_whose_overlap_does_not_match_is_read_again_by_keyset() -> None:
    from dagster_airpeer.feed.spans import RangeSpan, TimeSpan

    class Tick:
        parallel = 4
        page_size = 100
        server_time: datetime | None = None

        def seen_at(self, instant: datetime) -> int:
            return 0

        def expected_at(self, instant: datetime) -> int:
            return 0

        def expected_in(self, lo: datetime, hi: datetime) -> int:
            return 0

        def split_point(self, lo: datetime, hi: datetime) -> datetime | None:
            return None

        def resume_for(self, instant: datetime) -> None:
            return None

        def may_add_spans(self, count: int) -> bool:
            return True

    def run(i: int) -> DagRun:
        return DagRun(dag_id="d", run_id=f"r{i}", state="success", end_date=T0 + timedelta(seconds=i % 5))

    span = RangeSpan(lo=T0, hi=T0 + timedelta(seconds=5), tick=Tick(), page_len=3, total=7)
    requests = [span.next_request() for _ in range(4)]
    assert [r.offset if r else None for r in requests] == [0, 2, 4, None]  # all at once, overlapping by one
    assert all(r is not None and r.order_by == "id" and r.limit == 3 for r in requests[:3])
    pages = {0: (0, 1, 2), 2: (2, 3, 4), 4: (5, 6, 7)}  # r4 was deleted before the third page was read
    assert requests[1] is not None and requests[2] is not None and requests[0] is not None
    assert span.accept(requests[2], RunsPage(runs=tuple(run(i) for i in pages[4]), total_entries=7)) == []
    assert span.accept(requests[1], RunsPage(runs=tuple(run(i) for i in pages[2]), total_entries=7)) == []
    added = span.accept(requests[0], RunsPage(runs=tuple(run(i) for i in pages[0]), total_entries=7))
    assert span.replaced and not span.complete and span.runs == []
    assert len(added) == 1 and isinstance(added[0], TimeSpan)
    assert (added[0].lo, added[0].hi, added[0].may_range) == (span.lo, span.hi, False)
    assert span.next_request() is None


@pytest.mark.parametrize("change", ["delete", "late commit"])
def test_runs_changed_in_a_range_while_it_is_paged_are_delivered_exactly_once(change: str) -> None:
    """Runs deleted, or committed late with a low primary key, shift the offsets of a range's pages."""
    replaced = 0
    from dagster_airpeer.feed import spans

    original = spans.RangeSpan.accept

    def spy(self: spans.RangeSpan, request: Any, page: RunsPage) -> list[spans.Span]:
        nonlocal replaced
        was = self.replaced
        added = original(self, request, page)
        replaced += self.replaced and not was
        return added

    for trigger in range(2, 16):
        af = FakeAirflow(now=T0 + timedelta(seconds=1060))
        late = [T0 + timedelta(seconds=765 + i) for i in range(0, 12, 3)]
        if change == "late commit":
            # Added first, so they have the lowest ids; they become visible during the tick, with end dates
            # inside the late-commit window (after Airflow's clock at the tick's start minus 5 minutes).
            for i, end in enumerate(late):
                af.add("late", f"l{i}", end, commit_delay=af.now + timedelta(seconds=1) - end)
        _spread(af, 1000, timedelta(seconds=1))

        def act(request: int, af: FakeAirflow = af, trigger: int = trigger) -> None:
            if request != trigger:
                return
            if change == "delete":
                for i in (230, 300, 520, 600, 770):
                    af.delete(f"d{i % 7}", f"r{i:04}")
            else:
                af.now += timedelta(seconds=2)

        af.on_request = act
        feed = _feed(af, parallel=4)
        spans.RangeSpan.accept = spy  # type: ignore[method-assign]
        try:
            runs, state = _drain(feed, FeedState.initial(af.now, af.now - (T0 - timedelta(seconds=60))))
            af.now += LATE + timedelta(seconds=1)
            more, _ = _drain(feed, state)
        finally:
            spans.RangeSpan.accept = original  # type: ignore[method-assign]
        ids = _ids(runs + more)
        assert len(ids) == len(set(ids)), f"doubled (change at request {trigger})"
        remaining = {(r.run.dag_id, r.run.run_id, r.run.end_date) for r in af.rows}
        assert remaining <= set(ids), f"lost (change at request {trigger})"
    assert replaced > 0  # the offsets did shift under some range's pages


@pytest.mark.parametrize("fail_after", range(1, 20))
def test_outage_while_ranges_are_read_loses_and_doubles_nothing(fail_after: int) -> None:
    af = FakeAirflow(now=T0 + timedelta(minutes=20), page_cap=10)
    _spread(af, 95, timedelta(seconds=10))
    _assert_outage_loses_and_doubles_nothing(
        af, _feed(af, page_size=10), FeedState.initial(af.now, timedelta(minutes=20)), fail_after, 95
    )


def test_tied_runs_are_handed_over_page_by_page_as_their_pages_are_verified() -> None:
    af = FakeAirflow(now=T0 + timedelta(minutes=2))
    _tied(af, 1000, T0 + timedelta(minutes=1))
    batches: list[list[DagRun]] = []
    result = _feed(af, parallel=4).poll(
        FeedState.initial(af.now, timedelta(hours=1)), on_completions=batches.append
    )
    assert result.caught_up and len(result.completions) == 1000
    assert len(batches) > 1 and [run for batch in batches for run in batch] == result.completions


# ------------------------------------------------------------------------- counts of the settled window


def _window_of(af: FakeAirflow, count: int, *, span: timedelta = timedelta(minutes=4)) -> None:
    """`count` runs ending evenly over the `span` before Airflow's clock (all inside the late-commit window)."""
    for i in range(count):
        af.add(f"d{i % 11}", f"w{i:05}", af.now - span + span * i / count)


@pytest.mark.parametrize("parallel", [1, 4])
def test_idle_tick_over_a_window_of_many_runs_costs_a_few_counts(parallel: int) -> None:
    """5000 runs ended in the last 4 minutes (50 pages): an idle tick counts them instead of reading them."""
    af = FakeAirflow(now=T0 + timedelta(hours=1))
    _window_of(af, 5000)
    feed = _feed(af, parallel=parallel)
    runs, state = _drain(feed, FeedState.initial(af.now, timedelta(hours=1)))
    assert len(runs) == 5000
    af.now += FRESH + timedelta(seconds=5)  # the last runs are past the recent part, still in the window
    _drain(feed, state)  # one tick that reads the recent part by content once more
    returned: list[int] = []
    original = af.list_finished_runs

    def record(**kwargs: Any) -> RunsPage:
        page = original(**kwargs)
        returned.append(len(page.runs))
        return page

    af.list_finished_runs = record  # type: ignore[method-assign]
    for _ in range(3):
        af.now += timedelta(seconds=10)
        result = feed.poll(state)
        state = result.state
        before, returned[:] = af.requests, []
        result = feed.poll(state)
        state = result.state
        assert result.completions == [] and result.caught_up
        # Counts of the settled part, the recent part and the keyset: not 50 pages.
        assert af.requests - before <= 4, af.requests - before
        assert sum(returned) <= 3
    # A late commit into the counted part is found, by a few counts and one small page, and delivered once.
    af.add("late", "one", af.now - timedelta(minutes=2))
    before = af.requests
    result = feed.poll(state)
    assert _ids(result.completions) == [("late", "one", af.now - timedelta(minutes=2))]
    assert af.requests - before <= 20  # log2(50 pages) halvings of two counts each, then a page
    assert feed.poll(result.state).completions == []


def test_a_run_deleted_in_the_counted_window_does_not_hide_a_later_late_commit() -> None:
    """Counts compare with what was there when last read: a deletion is recorded as gone, so a run committing
    late into the same part afterwards (one more run again) is still found."""
    af = FakeAirflow(now=T0 + timedelta(hours=1))
    _window_of(af, 400)
    feed = _feed(af)
    runs, state = _drain(feed, FeedState.initial(af.now, timedelta(hours=1)))
    assert len(runs) == 400
    af.now += FRESH + timedelta(seconds=5)
    _, state = _drain(feed, state)
    victim = runs[100]
    af.delete(victim.dag_id, victim.run_id)
    af.now += timedelta(seconds=5)
    result = feed.poll(state)
    assert result.completions == [] and result.caught_up
    assert sum(result.state.gone.values()) == 1
    assert victim.end_date is not None
    af.add("late", "after-delete", victim.end_date + timedelta(microseconds=3))
    af.now += timedelta(seconds=5)
    again = feed.poll(FeedState.from_json(result.state.to_json()))
    assert _ids(again.completions) == [("late", "after-delete", victim.end_date + timedelta(microseconds=3))]
    af.now += LATE
    assert _drain(feed, again.state)[1].gone == {}


@pytest.mark.parametrize("parallel", [1, 4])
def test_a_tiny_time_budget_no_longer_stalls_the_feed(parallel: int) -> None:
    """1000 runs arrive over 200 s and every tick stops right after its first answers (a 10 ms budget): each
    run is delivered within a few ticks of becoming visible, not minutes later."""
    af = FakeAirflow(now=T0)
    feed = _feed(af, parallel=parallel, time_budget=0.01, clock=StepClock(1.0))
    state = FeedState.initial(af.now, timedelta(minutes=10))
    visible_at: dict[str, int] = {}
    delivered_at: dict[str, int] = {}
    for tick in range(160):
        af.now += timedelta(seconds=2)
        if tick < 100:
            for i in range(10):  # 5 runs a second, some committed a few seconds late
                run_id = f"r{tick:03}_{i}"
                delay = timedelta(seconds=(i * 7) % 5)
                af.add(f"d{i}", run_id, af.now - delay - timedelta(milliseconds=100 * i), commit_delay=delay)
                visible_at[run_id] = tick
        result = feed.poll(FeedState.from_json(state.to_json()))
        state = result.state
        for run in result.completions:
            assert run.run_id not in delivered_at, f"{run.run_id} delivered twice"
            delivered_at[run.run_id] = tick
    assert set(delivered_at) == set(visible_at)
    lag = max(delivered_at[r] - visible_at[r] for r in visible_at)
    # The recent part is read again one page a tick here, so a late commit waits a few ticks, not minutes.
    assert lag <= 8, f"a run was delivered {lag} ticks ({2 * lag} s) after it became visible"
    assert state.watermark == af.now - LATE  # the verification kept up too


def test_cursors_without_the_keyset_position_are_read_from_the_watermark() -> None:
    """A cursor written before counts (no `read_to`): the whole window is read again once, then counted."""
    af = FakeAirflow(now=T0 + timedelta(hours=1))
    _window_of(af, 300)
    feed = _feed(af)
    _, state = _drain(feed, FeedState.initial(af.now, timedelta(hours=1)))
    old = state.to_dict()
    for key in ("read_to", "full_from", "gone"):
        old.pop(key, None)
    restored = FeedState.from_dict(old)
    assert restored.position == restored.watermark == restored.recount_to
    af.add("late", "x", af.now - timedelta(minutes=3))
    result = feed.poll(restored)
    assert _ids(result.completions) == [("late", "x", af.now - timedelta(minutes=3))]
    assert result.state.read_to is not None and result.state.full_from is not None
    again = FeedState.from_json(result.state.to_json())
    assert again == result.state
