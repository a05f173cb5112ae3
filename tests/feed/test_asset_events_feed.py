"""The asset-event feed against an in-memory model of Airflow's asset-event listing.

The model answers `order_by=-timestamp` with offset pages as Airflow does: Airflow 3 orders ties by
descending id, Airflow 2 in no promised order (here: shuffled anew on every request). Events commit late
(visible some time after their timestamp), arrive between any two pages, share timestamps, and requests fail;
states go through JSON between ticks (restarts). Every history ends with idle ticks, after which every event
must have been delivered exactly once.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pytest

from dagster_airpeer.airflow.assets import AirflowAssetEvent, AssetEventsPage
from dagster_airpeer.airflow.errors import AirflowConnectionError
from dagster_airpeer.feed.asset_events import (
    AssetEventFeed,
    AssetFeedState,
    AssetFeedStateError,
    GroupTooLarge,
    asset_event_digest,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
LATE = timedelta(minutes=5)


@dataclass
class _Row:
    event: AirflowAssetEvent
    visible_from: datetime


@dataclass
class FakeAirflowEvents:
    """GET /assets/events?order_by=-timestamp&offset&limit, over a table that changes between requests."""

    total_order: bool
    now: datetime = T0
    page_cap: int = 100
    rows: list[_Row] = field(default_factory=list)
    requests: int = 0
    fail_rate: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    #: Called before each request is answered (to change the table between two pages).
    on_request: object = None
    next_id: int = 1

    def add(self, timestamp: datetime, *, commit_delay: timedelta = timedelta(0)) -> AirflowAssetEvent:
        event = AirflowAssetEvent(
            id=self.next_id, asset_id=1 + self.next_id % 3, name="a", uri="a", timestamp=timestamp
        )
        self.next_id += 1
        self.rows.append(_Row(event, timestamp + commit_delay))
        return event

    def visible(self) -> list[AirflowAssetEvent]:
        return [r.event for r in self.rows if r.visible_from <= self.now]

    def fetch(self, offset: int, limit: int) -> AssetEventsPage:
        self.requests += 1
        if callable(self.on_request):
            self.on_request(self)
        if self.fail_rate and self.rng.random() < self.fail_rate:
            raise AirflowConnectionError("injected outage")
        events = self.visible()
        if self.total_order:
            events.sort(key=lambda e: (e.timestamp, e.id), reverse=True)
        else:
            self.rng.shuffle(events)  # ties in any order, another one each time
            events.sort(key=lambda e: e.timestamp, reverse=True)  # stable: keeps the shuffled order in ties
        page = events[offset : offset + min(limit, self.page_cap)]
        return AssetEventsPage(
            events=tuple(page), total_entries=len(events), server_time=self.now.replace(microsecond=0)
        )


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _feed(fake: FakeAirflowEvents, clock: _Clock, **kw: object) -> AssetEventFeed:
    def fetch(offset: int, limit: int) -> AssetEventsPage:
        clock.t += 1.0  # each request costs a second of the tick's budget
        return fake.fetch(offset, limit)

    return AssetEventFeed(fetch, total_order=fake.total_order, late_commit_window=LATE, clock=clock, **kw)  # type: ignore[arg-type]


def _run_history(seed: int, total_order: bool) -> None:
    rng = random.Random(seed)
    fake = FakeAirflowEvents(total_order=total_order, rng=random.Random(seed + 1))
    fake.page_cap = rng.choice([3, 4, 7, 100])
    page_size = rng.choice([3, 5, 10, 100])
    fake.fail_rate = rng.choice([0.0, 0.0, 0.1, 0.3])
    clock = _Clock()
    feed = _feed(fake, clock, page_size=page_size, time_budget=rng.choice([2.0, 40.0, 400.0]))
    # Some history before the first tick, within the lookback.
    tie_share = rng.choice([0.0, 0.3])
    group_cap = max(1, min(fake.page_cap, page_size) - 3)

    def burst(count: int) -> None:
        for _ in range(count):
            if tie_share and rng.random() < tie_share and fake.rows:
                ts = fake.rows[-1].event.timestamp  # share the previous event's timestamp
                same = sum(1 for r in fake.rows if r.event.timestamp == ts)
                if same >= group_cap:
                    ts = fake.now - timedelta(microseconds=rng.randrange(1, 10**6))
            else:
                ts = fake.now - timedelta(microseconds=rng.randrange(0, 10**6))
            delay = (
                timedelta(seconds=rng.choice([0, 0, 0, 1, 30, 200])) if rng.random() < 0.3 else timedelta(0)
            )
            fake.add(ts, commit_delay=min(delay, LATE - timedelta(seconds=2)))

    def between_pages(f: FakeAirflowEvents) -> None:
        if rng.random() < 0.05:
            burst(rng.randrange(1, 3))

    fake.now = T0
    for _ in range(rng.randrange(0, 60)):
        fake.now += timedelta(seconds=rng.randrange(0, 60))
        burst(1)
    fake.on_request = between_pages
    state_doc: dict[str, object] | None = None
    delivered: list[int] = []
    first_watermark: datetime | None = None
    for _tick in range(rng.randrange(5, 40)):
        fake.now += timedelta(seconds=rng.choice([1, 5, 30, 90]))
        burst(rng.randrange(0, 8))
        clock.t = 0.0
        state = AssetFeedState.from_dict(json.loads(json.dumps(state_doc))) if state_doc is not None else None
        try:
            poll = feed.poll(state, lookback=timedelta(days=1))
        except AirflowConnectionError:
            continue  # the first request failed: the old state stays
        if first_watermark is None:
            first_watermark = fake.now.replace(microsecond=0) - timedelta(days=1)
        delivered.extend(e.id for e in poll.events)
        state_doc = poll.state.to_dict()
    # Quiet: no new events, no failures, until everything committed and settled. A tick verifies the top
    # (the late-commit window) only when it reads it whole within its budget: give it one that fits.
    fake.on_request = None
    fake.fail_rate = 0.0
    feed = _feed(fake, clock, page_size=page_size, time_budget=10_000.0)
    for _ in range(60):
        fake.now += timedelta(seconds=30)
        clock.t = 0.0
        state = AssetFeedState.from_dict(json.loads(json.dumps(state_doc))) if state_doc is not None else None
        poll = feed.poll(state, lookback=timedelta(days=1))
        if first_watermark is None:
            first_watermark = fake.now.replace(microsecond=0) - timedelta(days=1)
        delivered.extend(e.id for e in poll.events)
        state_doc = poll.state.to_dict()
        if poll.caught_up and fake.now > max((r.visible_from for r in fake.rows), default=T0) + 2 * LATE:
            break
    assert first_watermark is not None
    expected = sorted(e.id for e in fake.visible() if e.timestamp >= first_watermark)
    assert len(delivered) == len(set(delivered)), (
        f"doubled: {sorted(i for i in set(delivered) if delivered.count(i) > 1)}"
    )
    assert sorted(delivered) == expected, f"lost: {sorted(set(expected) - set(delivered))}"
    # The state holds about the window's events, not the history.
    assert state_doc is not None
    assert len(state_doc["seen"]) <= sum(  # type: ignore[arg-type]
        1 for e in fake.visible() if e.timestamp >= fake.now - 2 * LATE - timedelta(minutes=5)
    )


@pytest.mark.parametrize("total_order", [True, False], ids=["airflow3", "airflow2"])
@pytest.mark.parametrize("seed", range(100))
def test_random_histories_deliver_every_event_once(seed: int, total_order: bool) -> None:
    _run_history(seed, total_order)


def test_idle_tick_is_one_request_and_state_round_trips() -> None:
    fake = FakeAirflowEvents(total_order=True)
    for i in range(5):
        fake.add(T0 - timedelta(minutes=10 - i))
    clock = _Clock()
    feed = _feed(fake, clock, page_size=100)
    first = feed.poll(None, lookback=timedelta(hours=1))
    assert [e.id for e in first.events] == [1, 2, 3, 4, 5] and first.caught_up
    fake.requests = 0
    again = feed.poll(AssetFeedState.from_dict(json.loads(first.state.to_json())))
    assert again.events == [] and fake.requests == 1
    assert AssetFeedState.from_dict(again.state.to_dict()).to_dict() == again.state.to_dict()


def test_equal_timestamps_on_airflow2_across_page_boundaries() -> None:
    fake = FakeAirflowEvents(total_order=False, page_cap=5, rng=random.Random(3))
    for group in range(6):
        for _ in range(3):
            fake.add(T0 - timedelta(minutes=30) + timedelta(seconds=group))
    fake.now = T0
    poll = _feed(fake, _Clock(), page_size=5).poll(None, lookback=timedelta(hours=1))
    assert sorted(e.id for e in poll.events) == list(range(1, 19)) and poll.caught_up


def test_a_group_larger_than_a_page_on_airflow2_stops_and_says_why() -> None:
    fake = FakeAirflowEvents(total_order=False, page_cap=4)
    for _ in range(6):
        fake.add(T0 - timedelta(minutes=1))
    fake.add(T0 - timedelta(minutes=2))
    poll = _feed(fake, _Clock(), page_size=4).poll(None, lookback=timedelta(hours=1))
    assert isinstance(poll.interrupted, GroupTooLarge) and not poll.caught_up
    assert len(poll.events) == 4  # what was read is delivered; the rest waits


def test_failed_first_request_raises_and_a_later_failure_keeps_the_prefix() -> None:
    fake = FakeAirflowEvents(total_order=True, page_cap=3)
    for i in range(10):
        fake.add(T0 - timedelta(minutes=20) + timedelta(seconds=i))
    feed = _feed(fake, _Clock(), page_size=3)
    fake.fail_rate = 1.0
    with pytest.raises(AirflowConnectionError):
        feed.poll(None, lookback=timedelta(hours=1))
    fake.fail_rate = 0.0
    calls = {"n": 0}

    def fail_second(f: FakeAirflowEvents) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise AirflowConnectionError("down")

    fake.on_request = fail_second
    poll = feed.poll(None, lookback=timedelta(hours=1))
    assert isinstance(poll.interrupted, AirflowConnectionError)
    assert [e.id for e in poll.events] == [8, 9, 10]
    fake.on_request = None
    rest = feed.poll(poll.state)
    assert sorted(e.id for e in rest.events) == list(range(1, 8)) and rest.caught_up


def test_catching_up_costs_the_new_events_not_the_history() -> None:
    """A cursor far behind reads a budget's worth per tick, then jumps past what it read."""
    fake = FakeAirflowEvents(total_order=False, page_cap=10)
    for i in range(2000):
        fake.add(T0 - timedelta(hours=20) + timedelta(seconds=30 * i))
    fake.now = T0 + timedelta(hours=1)
    clock = _Clock()
    feed = _feed(fake, clock, page_size=10, time_budget=20.0)
    state = None
    delivered: list[int] = []
    per_tick: list[int] = []
    for _ in range(30):
        fake.requests = 0
        poll = feed.poll(state, lookback=timedelta(days=1))
        per_tick.append(fake.requests)
        delivered += [e.id for e in poll.events]
        state = AssetFeedState.from_dict(poll.state.to_dict())
        fake.now += timedelta(seconds=10)
        if poll.caught_up:
            break
    assert sorted(delivered) == list(range(1, 2001))
    # 2000 events at ~8 new per page: about 250 pages over the ticks, each tick within its budget (+1).
    assert max(per_tick) <= 21 and sum(per_tick) < 400


def test_state_errors() -> None:
    with pytest.raises(AssetFeedStateError):
        AssetFeedState.from_dict({"v": 99})
    with pytest.raises(AssetFeedStateError):
        AssetFeedState.from_dict({"v": 1, "watermark": "2026-01-01T00:00:00"})


def test_digest_is_stable() -> None:
    event = AirflowAssetEvent(id=7, asset_id=2, name="x", uri="x", timestamp=T0)
    assert asset_event_digest(event) == asset_event_digest(event.model_copy())
    assert asset_event_digest(event) != asset_event_digest(event.model_copy(update={"id": 8}))
