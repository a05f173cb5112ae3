"""The asset-event feed: every Airflow dataset (2.x) / asset (3.x) event, exactly once.

Kept free of Dagster, like the run feed. What Airflow offers decides the shape (see `airflow/assets.py`):
Airflow 2.11's `GET /api/v1/datasets/events` has no timestamp filter and no tiebreaker, only
`order_by=-timestamp` with offset paging; Airflow 3's `GET /api/v2/assets/events` orders `-timestamp` by
descending id within a timestamp. One algorithm serves both: **newest first, from offset 0, down to a floor**.

* **Keys.** An event's key is its timestamp (Airflow 2) or (timestamp, id) (Airflow 3); newest first means
  descending keys. On Airflow 2, events sharing one timestamp (a *group*) may come in any order, and in another
  order in the next request.
* **Pages that never skip.** After a page whose last key is K, everything with a key above K is read; the
  next page starts one event before the first event of K's group, and must begin with a key above K. New
  events (at the top) and late commits shift the listing down, so a page then repeats events (recognised by
  id); a deletion above shifts it up, which the check sees: the page is asked again a page earlier. A group
  larger than a page cannot be read this way on Airflow 2 (Airflow 3 has no groups): the tick stops there and
  says so (Airflow stamps each event with its own `utcnow()`, so such a group does not happen in practice).
* **Late commits.** Airflow stamps `timestamp` before its transaction commits. The watermark W ("every event
  before W was delivered") moves only to Airflow's clock at the tick's first answer (HTTP `Date`) minus
  `late_commit_window`; each tick reads again from the top down to W, delivering what it had not delivered
  (by id). Cost per tick: the events of the late-commit window plus the new ones; never the history.
* **Bounded ticks, catching up.** A tick stops at its time budget (after some progress) or at a failed
  request (after the first: the first one fails the tick and the old state stays). Everything it read is
  delivered. If it stopped above W, the state keeps a *resume point*: the key where reading stopped, its
  offset and the listing's `total_entries` then, and `covered_to`: every event with a key above the resume
  point and a timestamp before `covered_to` was delivered and is settled (older than the window when read).
  The next tick reads from the top down to `covered_to` (new events, and what may still commit late), then
  jumps to the resume point's offset shifted by how much the listing grew (`total_entries` now minus then;
  deletions make the jump land early, which costs a re-read, never a skip; a landing below it is seen by the
  check above and backed off), and reads on down to W.
* **State** (`AssetFeedState.to_dict()`, JSON): W, the ids (with timestamps) of delivered events from
  `covered_to` (or W) on, and the resume point. Events below W, or inside the covered range, are recognised
  without ids, so the state holds about the late-commit window's events.

Assumption (as for runs, docs/cursor.md): an event becomes visible within `late_commit_window` of its
timestamp; and Airflow does not delete events newer than the window (`airflow db clean` deletes old ones).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from ..airflow.assets import AirflowAssetEvent, AssetEventsPage
from ..airflow.errors import AirflowError

__all__ = [
    "ASSET_FEED_VERSION",
    "AssetEventFeed",
    "AssetEventsPoll",
    "AssetFeedState",
    "AssetFeedStateError",
    "asset_event_digest",
]

ASSET_FEED_VERSION = 1

#: fetch(offset, limit) -> one page of every event, newest first (`airflow.assets.get_asset_events_page`).
FetchPage = Callable[[int, int], AssetEventsPage]

#: A key as stored: (ISO timestamp, id or None). ISO strings of one fixed format sort like the instants.
Key = tuple[str, int | None]


class AssetFeedStateError(ValueError):
    """The stored asset-feed state cannot be read."""


def _iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _parse(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise AssetFeedStateError(f"timestamp {value!r} has no timezone")
    return parsed


def asset_event_digest(event: AirflowAssetEvent) -> str:
    """A short, stable identity of one event (its id, asset id and timestamp): 72 bits, URL-safe."""
    raw = f"{event.id}\x1f{event.asset_id}\x1f{_iso(event.timestamp)}".encode()
    return base64.urlsafe_b64encode(hashlib.blake2b(raw, digest_size=9).digest()).decode("ascii")


@dataclass(frozen=True)
class Resume:
    """Where a tick that stopped above the watermark stopped (see the module docstring)."""

    #: Events with a key above this were read (the group at it was not, on Airflow 2).
    key: Key
    #: The offset of the first event at `key`, in the listing of the page that found it...
    offset: int
    #: ...and that listing's `total_entries`.
    total: int
    #: Events with a key above `key` and a timestamp before this were delivered and are settled (read when
    #: older than the late-commit window); those above `key` from here on were delivered and are read again.
    covered_to: str
    #: Everything below `key` down to the watermark was read too: only the top is left to verify.
    bottom_done: bool = False


@dataclass
class AssetFeedState:
    """The asset feed's position; `to_dict()` is what the sensor stores."""

    #: Every event with a timestamp before this was delivered (or predates the first lookback).
    watermark: datetime
    #: id -> ISO timestamp of events delivered at or after the watermark and not inside the covered range.
    seen: dict[int, str] = field(default_factory=dict)
    resume: Resume | None = None

    @classmethod
    def initial(cls, now: datetime, lookback: timedelta) -> AssetFeedState:
        """A first state: events since `now - lookback` (on Airflow's clock) are delivered."""
        return cls(watermark=now - lookback)

    def copy(self) -> AssetFeedState:
        return AssetFeedState(watermark=self.watermark, seen=dict(self.seen), resume=self.resume)

    def _covered(self, key: Key) -> bool:
        r = self.resume
        return r is not None and _above(key, r.key) and key[0] < r.covered_to

    def delivered(self, event: AirflowAssetEvent, key: Key) -> bool:
        """Whether the event was delivered already (or lies below the watermark, so is not ours)."""
        if event.timestamp < self.watermark:
            return True
        return event.id in self.seen or self._covered(key)

    def prune(self) -> None:
        """Forget ids below the watermark or inside the covered range (both are recognised without them)."""
        cut = _iso(self.watermark)
        r = self.resume
        self.seen = {
            i: ts
            for i, ts in self.seen.items()
            if ts >= cut and not (r is not None and ts < r.covered_to and _above((ts, i), r.key))
        }

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "v": ASSET_FEED_VERSION,
            "watermark": _iso(self.watermark),
            "seen": [[i, ts] for i, ts in sorted(self.seen.items())],
        }
        if self.resume is not None:
            r = self.resume
            doc["resume"] = {
                "key": list(r.key),
                "offset": r.offset,
                "total": r.total,
                "covered_to": r.covered_to,
            }
            if r.bottom_done:
                doc["resume"]["bottom_done"] = True
        return doc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, doc: Any) -> AssetFeedState:
        try:
            if not isinstance(doc, dict) or doc.get("v") != ASSET_FEED_VERSION:
                version = doc.get("v") if isinstance(doc, dict) else doc
                raise AssetFeedStateError(f"unsupported asset-feed state version {version!r}")
            state = cls(
                watermark=_parse(doc["watermark"]),
                seen={int(i): _iso(_parse(ts)) for i, ts in doc.get("seen", [])},
            )
            r = doc.get("resume")
            if r:
                ts, ident = r["key"]
                state.resume = Resume(
                    key=(_iso(_parse(ts)), None if ident is None else int(ident)),
                    offset=int(r["offset"]),
                    total=int(r["total"]),
                    covered_to=_iso(_parse(r["covered_to"])) if r["covered_to"] else "",
                    bottom_done=bool(r.get("bottom_done", False)),
                )
            return state
        except AssetFeedStateError:
            raise
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise AssetFeedStateError(f"not an airpeer asset-feed state: {exc!r}") from exc


def _above(a: Key, b: Key) -> bool:
    """Whether key `a` comes before `b` newest first (a strictly newer key; ids compare only if both have one)."""
    if a[0] != b[0]:
        return a[0] > b[0]
    if a[1] is None or b[1] is None:
        return False
    return a[1] > b[1]


@dataclass
class AssetEventsPoll:
    """What one tick found."""

    #: Events not delivered before, oldest first.
    events: list[AirflowAssetEvent]
    state: AssetFeedState
    #: True when the tick read down to the watermark; False when it stopped early (budget, error, big group).
    caught_up: bool
    requests: int
    #: Why the tick stopped early, if it did (an error after the first request, or a group larger than a page).
    interrupted: Exception | None = None


class GroupTooLarge(AirflowError):
    """More events share one timestamp than a page holds (Airflow 2 only): the feed cannot page through them."""


@dataclass
class _Scan:
    """The outcome of reading pages down from an offset."""

    complete: bool
    #: When incomplete: the boundary reached (everything with a key above it was read), its group's offset
    #: and the listing's total then; None if not even the first page was read.
    boundary: tuple[Key, int, int] | None = None
    error: Exception | None = None


class AssetEventFeed:
    """Reads new asset events from Airflow, exactly once, within a time budget.

    Args:
        fetch: one page of every event, newest first: `fetch(offset, limit)`.
        total_order: True for Airflow 3 (ties ordered by id), False for Airflow 2 (ties in any order).
        late_commit_window: how long after its timestamp an event may still become visible.
        time_budget: seconds after which a tick sends no new request (once it made progress).
        page_size: events asked per page (the server may send fewer); at least 3.
        clock: monotonic clock, for tests.
    """

    def __init__(
        self,
        fetch: FetchPage,
        *,
        total_order: bool,
        late_commit_window: timedelta = timedelta(minutes=5),
        time_budget: float = 8.0,
        page_size: int = 100,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if late_commit_window < timedelta(0):
            raise ValueError("late_commit_window must not be negative")
        if page_size < 3:
            raise ValueError(f"page_size must be >= 3, got {page_size}")
        self._fetch = fetch
        self._total_order = total_order
        self._late = late_commit_window
        self._budget = time_budget
        self._page_size = page_size
        self._clock = clock

    def key(self, event: AirflowAssetEvent) -> Key:
        return (_iso(event.timestamp), event.id if self._total_order else None)

    def poll(
        self, state: AssetFeedState | None, *, lookback: timedelta = timedelta(days=1)
    ) -> AssetEventsPoll:
        """One tick from `state` (not modified). The first request's failure is raised (keep the old state).

        `state` None is a first tick: the watermark starts at Airflow's clock (its first answer) minus
        `lookback`.
        """
        if state is None:
            tick = _Tick(self, AssetFeedState(watermark=_EPOCH), started=self._clock(), lookback=lookback)
        else:
            tick = _Tick(self, state.copy(), started=self._clock())
        s = tick.state
        old = s.resume
        interrupted: Exception | None = None
        # 1. Catching up: read on down from where an earlier tick stopped (first, so a busy top never holds
        #    it back), jumping to the resume point's offset shifted by how much the listing grew since.
        bottom: _Scan | None = None
        if old is not None and not old.bottom_done:
            bottom = tick.peek()
            if bottom is None:
                offset = max(0, old.offset + (tick.last_total - old.total) - 1)
                bottom = tick.scan(offset, floor=None, above=old.key if offset > 0 else None)
            interrupted = bottom.error
        # 2. The top: new events, and what may still commit late, down to the covered range (or W).
        #    Everything from `covered_to` on is read again, also below the resume point (read by step 1 before
        #    it was settled).
        floor = old.covered_to if old is not None and old.covered_to else None
        top = tick.scan(0, floor=floor, above=None)
        interrupted = interrupted or top.error
        settled = tick.settled_line()
        caught_up = False
        if old is None:
            if top.complete:
                caught_up = True
                if settled:
                    s.watermark = max(s.watermark, _parse(settled))
            elif top.boundary is not None:
                key, offset, total = top.boundary
                s.resume = Resume(key=key, offset=offset, total=total, covered_to=settled)
        else:
            bottom_done = old.bottom_done or (bottom is not None and bottom.complete)
            covered_to = max(old.covered_to, settled) if top.complete else old.covered_to
            if bottom_done and top.complete:
                caught_up = True
                s.resume = None
                if settled:
                    s.watermark = max(s.watermark, _parse(settled))
            elif bottom_done:
                s.resume = Resume(old.key, old.offset, old.total, covered_to, bottom_done=True)
            elif bottom is not None and bottom.boundary is not None and _above(old.key, bottom.boundary[0]):
                # Only ever down: a jump that landed early (the listing grew below the point, or shrank above
                # it) re-reads events whose ids were forgotten inside the covered range.
                key, offset, total = bottom.boundary
                s.resume = Resume(key=key, offset=offset, total=total, covered_to=covered_to)
            else:
                s.resume = Resume(old.key, old.offset, old.total, covered_to)
        s.prune()
        events = sorted(tick.out, key=lambda e: (e.timestamp, e.id))
        return AssetEventsPoll(
            events=events, state=s, caught_up=caught_up, requests=tick.requests, interrupted=interrupted
        )


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass
class _Tick:
    feed: AssetEventFeed
    state: AssetFeedState
    started: float
    #: A first tick: the watermark is set from Airflow's clock at its first answer.
    lookback: timedelta | None = None
    requests: int = 0
    server_time: datetime | None = None
    newest: datetime | None = None
    last_total: int = 0
    out: list[AirflowAssetEvent] = field(default_factory=list)

    def settled_line(self) -> str:
        """ISO of Airflow's clock at the tick's first answer minus the window ('' when unknown)."""
        now = self.server_time or self.newest
        return _iso(now - self.feed._late) if now is not None else ""

    def over(self) -> bool:
        return self.feed._clock() - self.started >= self.feed._budget

    def first_answer(self, page: AssetEventsPage) -> None:
        self.server_time = page.server_time
        if self.lookback is not None:
            now = page.server_time
            if now is None:
                now = max((e.timestamp for e in page.events), default=datetime.now(timezone.utc))
            self.state.watermark = now - self.lookback

    def take(self, page: AssetEventsPage) -> None:
        for event in page.events:
            key = self.feed.key(event)
            if not self.state.delivered(event, key):
                self.state.seen[event.id] = key[0]
                self.out.append(event)

    def peek(self) -> _Scan | None:
        """Read the first page (the listing's size now, and its new events); a _Scan only if it failed."""
        try:
            page = self.feed._fetch(0, self.feed._page_size)
        except AirflowError as exc:
            if self.requests == 0:
                raise
            self.requests += 1
            return _Scan(complete=False, error=exc)
        self.answer(page)
        self.take(page)
        return None

    def answer(self, page: AssetEventsPage) -> None:
        if self.requests == 0:
            self.first_answer(page)
        self.requests += 1
        self.last_total = page.total_entries
        for event in page.events:
            if self.newest is None or event.timestamp > self.newest:
                self.newest = event.timestamp

    def scan(self, offset: int, *, floor: str | None, above: Key | None) -> _Scan:
        """Read pages newest first from `offset` until an event older than `floor` (None: the watermark) is
        read, or the listing ends.

        `above`: the page at `offset` must start with a key above it (else the listing shifted up and the
        page is asked again a page earlier). Stops (incomplete) at the budget once a page was read, or at a
        failed request after the tick's first.
        """
        feed = self.feed
        boundary: tuple[Key, int, int] | None = None
        read_here = 0
        while True:
            if read_here and self.over():
                return _Scan(complete=False, boundary=boundary)
            try:
                page = feed._fetch(offset, feed._page_size)
            except AirflowError as exc:
                if self.requests == 0:
                    raise
                self.requests += 1
                return _Scan(complete=False, boundary=boundary, error=exc)
            self.answer(page)
            events = page.events
            if offset > 0 and above is not None and (not events or not _above(feed.key(events[0]), above)):
                # The listing shifted up (events above our position deleted): ask a page earlier.
                offset = max(0, offset - feed._page_size)
                if offset == 0:
                    above = None
                continue
            read_here += 1
            self.take(page)
            n = len(events)
            low = self.state.watermark if floor is None else _parse(floor)
            if n == 0 or offset + n >= page.total_entries or events[-1].timestamp < low:
                return _Scan(complete=True)
            last = feed.key(events[-1])
            # Everything above `last` was read (the page started above the previous boundary). The next page
            # starts one event before the first one at `last`, and must start above `last`.
            first_at_last = (
                n - 1 if feed._total_order else next(i for i, e in enumerate(events) if feed.key(e) == last)
            )
            at = offset + first_at_last
            if at - 1 <= offset:
                return _Scan(
                    complete=False,
                    boundary=boundary,
                    error=GroupTooLarge(
                        f"Airflow's page of {n} asset events ends with {n - first_at_last} sharing the timestamp "
                        f"{last[0]}: the feed cannot page past them. Raise Airflow's [api] maximum_page_limit "
                        "(and airpeer's page size) above the number of events sharing one timestamp."
                    ),
                )
            boundary = (last, at, page.total_entries)
            above = last
            offset = at - 1
