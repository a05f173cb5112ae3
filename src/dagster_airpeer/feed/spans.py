"""The parts one tick reads: ranges of end dates (keyset order) and groups of runs sharing one end date.

A tick reads ``end_date >= watermark`` as an ordered list of spans. Each span is read by its own sequence of
pages and may split off further spans after its first page, so several pages can be in flight at once; the
poller (``poll.py``) merges the spans in list order, which is end-date order.

* ``TimeSpan(lo, hi)``: runs with ``lo <= end_date < hi``, read by keyset on ``end_date`` (the next page starts
  at the last end date read, so a run inserted or deleted between two pages cannot make us skip one). After
  its first page a span that has more than a page left splits the rest of its range into slices of about a
  page each, read concurrently. Slices are disjoint filters, so together they read exactly what one keyset
  walk would. A span with an end whose rest holds at most ``RANGE_MAX_PAGES`` pages is read instead as a
  ``RangeSpan``, which needs no more requests than that rest has pages.
* ``RangeSpan(lo, hi)``: the rest of a span with an end, read in primary-key order by offset pages that all go
  out at once (its size is known). Pages overlap by one run, which must match, as in a tie span; the range
  is delivered only once read whole, since primary-key order is not end-date order. If an overlap does not
  match (runs committed or deleted in the range meanwhile), it is read again by keyset in the same tick.
* ``TieSpan(at)``: every run with ``end_date == at`` when a whole page shares that instant (the keyset cannot
  move). Read in primary-key order by offset; consecutive pages overlap by one run, and that run must match,
  so a run deleted meanwhile (which shifts offsets) is detected instead of making us skip one. Pages after
  the first are independent requests and go out concurrently.
* ``CountSpan(lo, hi)``: a part of the late-commit window whose runs were all read once they were settled:
  one request asks only how many runs end in it (``limit=1``, ``total_entries``). As many as expected: nothing
  to read. Otherwise it splits in two (at the median of what was delivered there) until a part is small enough
  to be read again, as a ``TimeSpan``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol

from ..airflow.errors import AirflowResponseError
from ..airflow.models import DagRun, RunsPage
from .state import run_digest

ONE_MICROSECOND = timedelta(microseconds=1)
#: Time slices are sized for this share of a page, so most are read in one request.
_SLICE_FILL = 0.85
#: A bound on the spans of one tick (the slices of a pathological distribution of end dates).
MAX_SPANS = 512
#: The rest of a span with an end is read as one `RangeSpan` up to this many pages (it is delivered only
#: once read whole, so it is kept small enough to be read within a tick); past that, it is cut in time.
RANGE_MAX_PAGES = 10


@dataclass(frozen=True)
class PageRequest:
    """The arguments of one `list_finished_runs` call."""

    end_date_gte: datetime
    end_date_lte: datetime | None = None
    order_by: Literal["end_date", "id"] = "end_date"
    offset: int = 0
    limit: int | None = None
    #: Which page of its span this is (tie spans have several in flight).
    index: int = 0


class TickContext(Protocol):
    """What spans need to know about the tick they belong to."""

    parallel: int
    page_size: int
    server_time: datetime | None

    def seen_at(self, instant: datetime) -> int: ...

    def expected_at(self, instant: datetime) -> int: ...

    def expected_in(self, lo: datetime, hi: datetime) -> int: ...

    def split_point(self, lo: datetime, hi: datetime) -> datetime | None: ...

    def resume_for(self, instant: datetime) -> tuple[int, str | None] | None: ...

    def may_add_spans(self, count: int) -> bool: ...


class Span:
    """One part of a tick's range, read by its own pages."""

    error: Exception | None = None

    def next_request(self) -> PageRequest | None:
        raise NotImplementedError

    def accept(self, request: PageRequest, page: RunsPage) -> list[Span]:
        """Take a page; returns the spans to insert right after this one."""
        raise NotImplementedError

    def fail(self, request: PageRequest, error: Exception) -> None:
        self.error = error


def spans_between(points: list[datetime], hi: datetime | None, tick: TickContext) -> list[TimeSpan]:
    """Time spans from each point to the next, the last one up to `hi` (None: open-ended)."""
    ends: list[datetime | None] = [*points[1:], hi]
    return [TimeSpan(lo, end, tick) for lo, end in zip(points, ends, strict=True)]


@dataclass(eq=False)
class TimeSpan(Span):
    lo: datetime
    hi: datetime | None
    tick: TickContext
    #: Every run of the span ending before this instant was read.
    position: datetime = field(init=False)
    runs: list[DagRun] = field(default_factory=list)
    #: The tie group this span ran into: the span covers [lo, tie_at), a TieSpan reads the group.
    tie_at: datetime | None = None
    complete: bool = False
    error: Exception | None = None
    #: False for a span that re-reads a `RangeSpan` whose overlap did not match: it stays a keyset walk.
    may_range: bool = True
    #: Re-reads a part whose count did not match: a group of tied runs in it is read whole, not counted again.
    reread: bool = False
    _pages: int = 0
    _in_flight: bool = False

    def __post_init__(self) -> None:
        self.position = self.lo

    def next_request(self) -> PageRequest | None:
        if self.complete or self._in_flight or self.error is not None:
            return None
        self._in_flight = True
        lte = self.hi - ONE_MICROSECOND if self.hi is not None else None
        return PageRequest(end_date_gte=self.position, end_date_lte=lte, index=self._pages)

    def fail(self, request: PageRequest, error: Exception) -> None:
        self._in_flight = False
        self.error = error

    def accept(self, request: PageRequest, page: RunsPage) -> list[Span]:
        self._in_flight = False
        self._pages += 1
        # A server that ignored a filter must not make us deliver a run twice or out of its span.
        runs = [
            r
            for r in page.runs
            if r.end_date is not None
            and r.end_date >= self.position
            and (self.hi is None or r.end_date < self.hi)
        ]
        if len(page.runs) >= page.total_entries:
            self.runs.extend(runs)
            self.complete = True
            return []
        if not runs:
            self.error = AirflowResponseError(
                "Airflow answered a page of finished runs none of which has an end date in the range asked for; "
                "the sensor will read it again at the next tick"
            )
            return []
        first_end = min(r.end_date for r in runs if r.end_date is not None)
        last_end = max(r.end_date for r in runs if r.end_date is not None)
        if first_end == last_end:
            # A full page of one instant: the keyset cannot move. This span ends there; the group is read by
            # primary key, and the rest of the range after it.
            self.tie_at = last_end
            self.complete = True
            after = TimeSpan(last_end + ONE_MICROSECOND, self.hi, self.tick)
            after.reread = self.reread
            return [TieSpan(at=last_end, tick=self.tick, read_whole=self.reread), after]
        if self._pages == 1 and self._rest_fits_a_range(page, len(page.runs)):
            return self._hand_rest_to_range(page, runs, last_end)
        self.runs.extend(runs)
        self.position = last_end
        if self._pages == 1:
            return self._split(page, len(runs), first_end, last_end)
        return []

    def _rest_fits_a_range(self, page: RunsPage, page_len: int) -> bool:
        return (
            self.hi is not None
            and self.may_range
            and self.tick.parallel > 1
            and page_len > 1
            and page.total_entries - len(page.runs) <= (RANGE_MAX_PAGES - 1) * page_len
            and self.tick.may_add_spans(1)
        )

    def _hand_rest_to_range(self, page: RunsPage, runs: list[DagRun], last_end: datetime) -> list[Span]:
        """Keep the runs before the page's last instant; the rest of the span, from that instant, is a range.

        The runs at `last_end` may continue past the page, so they are all read again by the range.
        """
        assert self.hi is not None
        before = [r for r in runs if r.end_date is not None and r.end_date < last_end]
        rest = RangeSpan(
            lo=last_end,
            hi=self.hi,
            tick=self.tick,
            page_len=len(page.runs),
            total=page.total_entries - len(before),
            reread=self.reread,
        )
        self.runs.extend(before)
        self.position = self.hi = last_end
        self.complete = True
        return [rest]

    def _split(self, page: RunsPage, page_len: int, first_end: datetime, last_end: datetime) -> list[Span]:
        """Cut the rest of the range into slices of about a page each, to read them concurrently.

        Where the remaining runs lie is estimated from the first page's density (runs per second), capped
        by the span's end or Airflow's clock. The estimate only balances the slices: they cover the range
        whatever it is, and the last one reaches the span's end, so a slice that holds more than expected
        is read by more pages (and splits again after its first).
        """
        remaining = page.total_entries - len(page.runs)
        if self.tick.parallel <= 1 or remaining <= page_len:
            return []
        upper = last_end + (last_end - first_end) * (remaining / page_len)
        if self.hi is not None:
            upper = min(upper, self.hi)
        elif self.tick.server_time is not None:
            # Runs end before Airflow's clock (the last slice stays open-ended for any that do not).
            upper = min(upper, self.tick.server_time + timedelta(seconds=1))
        if upper <= last_end:
            return []
        count = math.ceil(remaining / (_SLICE_FILL * page_len))
        step = (upper - last_end) / count
        if step < ONE_MICROSECOND:
            count = int((upper - last_end) / ONE_MICROSECOND)
            step = ONE_MICROSECOND
        if count < 2 or not self.tick.may_add_spans(count - 1):
            return []
        bounds = [last_end + step * i for i in range(1, count)]
        added: list[TimeSpan] = spans_between(bounds, self.hi, self.tick)
        for span in added:
            span.may_range, span.reread = self.may_range, self.reread
        self.hi = bounds[0]
        return [*added]


@dataclass(eq=False)
class TiePage:
    """One page read in primary-key order (a tie span's or a range span's)."""

    offset: int
    runs: tuple[DagRun, ...]
    total: int
    requested: int


def chain_pages(
    pages: list[TiePage], arrived: dict[int, TiePage], page_len: int
) -> Literal["complete", "broken"] | None:
    """Append arrived pages (keyed by their index) in order while each one starts with the run the previous one
    ended with; returns whether the chain is complete, broken (runs inserted or deleted meanwhile shifted the
    offsets), or still waiting for a page.

    A server page size of one run cannot overlap: such pages follow each other unchecked.
    """
    while True:
        page = arrived.pop(len(pages), None)
        if page is None:
            return None
        if pages:
            previous = pages[-1]
            if not page.runs:
                # The runs ended before this page (deleted meanwhile, or their number was overestimated).
                return "broken" if previous.offset + len(previous.runs) < page.total else "complete"
            if page_len > 1 and run_digest(page.runs[0]) != run_digest(previous.runs[-1]):
                return "broken"
        pages.append(page)
        if len(page.runs) < page.requested or page.offset + len(page.runs) >= page.total:
            return "complete"


def chained_offset(start: int, index: int, page_len: int) -> int:
    """The offset of the `index`-th page after the page at `start` (each overlaps the one before by one run)."""
    return start + index * (page_len - 1) if page_len > 1 else start + index


def chained_page_needed(offset: int, total: int, page_len: int) -> bool:
    """Whether a page chained at `offset` can hold a run the page before it did not (its first run is that
    page's last one)."""
    return offset + 1 < total if page_len > 1 else offset < total


@dataclass(eq=False)
class RangeSpan(Span):
    """The runs with ``lo <= end_date < hi``, in primary-key order, `total` of them when the range was sized.

    Every page goes out at once (at offsets ``0, L-1, 2(L-1), ...`` for a server page of L runs, each overlapping
    the one before by one run); more follow if a page reports more runs. Delivered only once read whole, in
    end-date order. When an overlap does not match, the range is read again by keyset (`replaced`).
    """

    lo: datetime
    hi: datetime
    tick: TickContext
    page_len: int
    total: int
    pages: list[TiePage] = field(default_factory=list)
    runs: list[DagRun] = field(default_factory=list)
    complete: bool = False
    reread: bool = False
    #: An overlap did not match: this span delivers nothing and a keyset `TimeSpan` over it follows it.
    replaced: bool = False
    error: Exception | None = None
    _next_index: int = 0
    _arrived: dict[int, TiePage] = field(default_factory=dict)

    def next_request(self) -> PageRequest | None:
        if self.complete or self.replaced or self.error is not None:
            return None
        offset = chained_offset(0, self._next_index, self.page_len)
        if self._next_index > 0 and not chained_page_needed(offset, self.total, self.page_len):
            return None
        index = self._next_index
        self._next_index += 1
        return PageRequest(
            end_date_gte=self.lo,
            end_date_lte=self.hi - ONE_MICROSECOND,
            order_by="id",
            offset=offset,
            limit=self.page_len,
            index=index,
        )

    def accept(self, request: PageRequest, page: RunsPage) -> list[Span]:
        if self.complete or self.replaced:
            return []  # a page still in flight when the range was settled
        runs = tuple(r for r in page.runs if r.end_date is not None and self.lo <= r.end_date < self.hi)
        self.total = max(self.total, page.total_entries)
        self._arrived[request.index] = TiePage(request.offset, runs, page.total_entries, request.limit or 0)
        outcome = chain_pages(self.pages, self._arrived, self.page_len)
        if outcome == "complete":
            self.complete = True
            for index, verified in enumerate(self.pages):
                # A page after the first starts with the run the one before ended with.
                self.runs.extend(verified.runs[1:] if index and self.page_len > 1 else verified.runs)
            self.runs.sort(key=lambda r: r.end_date or self.lo)
        elif outcome == "broken":
            self.replaced = True
            keyset = TimeSpan(self.lo, self.hi, self.tick)
            keyset.may_range = False
            keyset.reread = self.reread
            return [keyset]
        return []


@dataclass(eq=False)
class TieSpan(Span):
    """The runs ending exactly at `at`, in primary-key order."""

    at: datetime
    tick: TickContext
    #: Verified pages, in order (each overlaps the one before by one run).
    pages: list[TiePage] = field(default_factory=list)
    complete: bool = False
    #: The group was skipped: as many runs end at `at` as were already delivered there.
    skipped: bool = False
    #: Read from its first run (not resumed, not skipped): a count check after it cannot ask for more.
    full: bool = False
    #: Read where an earlier tick stopped; `resumed_from` is that (offset, anchor).
    resumed_from: tuple[int, str | None] | None = None
    #: An overlap run did not match (runs deleted meanwhile): reading stops after the verified pages.
    broken: bool = False
    error: Exception | None = None
    total: int = 0
    #: How many of `pages` the poller has delivered.
    delivered_pages: int = 0
    #: Read the group from its first run even if it was delivered (a count of it did not match).
    read_whole: bool = False
    _mode: Literal["count", "first", "rest"] = "first"
    _anchor: str | None = None
    _first_offset: int = 0
    _page_len: int = 0
    _base: int = 0
    _next_index: int = 1
    _arrived: dict[int, TiePage] = field(default_factory=dict)
    _in_flight: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        resume = self.tick.resume_for(self.at)
        if self.read_whole:
            self.full = True
        elif resume is not None:
            self.resumed_from = resume
            offset, anchor = resume
            if anchor is not None and offset > 0:
                # Start at the run the last tick ended with: finding it first proves nothing was skipped.
                self._anchor, self._first_offset = anchor, offset - 1
            else:
                self.full = True
        elif self.tick.seen_at(self.at):
            self._mode = "count"
        else:
            self.full = True

    @property
    def done(self) -> bool:
        return self.complete or self.broken

    @property
    def stop_point(self) -> tuple[int, str | None] | None:
        """Where to resume after the verified pages: (offset of the next run, digest of the last run read)."""
        if not self.pages:
            return self.resumed_from
        last = self.pages[-1]
        if not last.runs:
            return self.resumed_from
        return last.offset + len(last.runs), run_digest(last.runs[-1])

    def next_request(self) -> PageRequest | None:
        if self.done or self.error is not None:
            return None
        if self._mode == "count":
            if self._in_flight:
                return None
            self._in_flight.add(0)
            return self._request(0, limit=1, index=0)
        if self._mode == "first":
            if self._in_flight:
                return None
            self._in_flight.add(0)
            return self._request(self._first_offset, limit=None, index=0)
        # Pages after the first are independent: as many go out as the poller allows, up to the group's size.
        offset = chained_offset(self._base, self._next_index, self._page_len)
        if not chained_page_needed(offset, self.total, self._page_len):
            return None
        index = self._next_index
        self._next_index += 1
        self._in_flight.add(index)
        return self._request(offset, limit=self._page_len, index=index)

    def _request(self, offset: int, *, limit: int | None, index: int) -> PageRequest:
        return PageRequest(
            end_date_gte=self.at, end_date_lte=self.at, order_by="id", offset=offset, limit=limit, index=index
        )

    def fail(self, request: PageRequest, error: Exception) -> None:
        self._in_flight.discard(request.index)
        self.error = error

    def accept(self, request: PageRequest, page: RunsPage) -> list[Span]:
        self._in_flight.discard(request.index)
        runs = tuple(r for r in page.runs if r.end_date == self.at)
        if self._mode == "count":
            # Equal, not "at least": a run deleted there is recorded as gone once the group is read whole, so
            # a later count that matches again means no run joined it since (docs/cursor.md, "Counts").
            if self.tick.expected_at(self.at) == page.total_entries:
                self.skipped = self.complete = True
            else:
                self._mode, self.full = "first", True
            return []
        if self._mode == "first":
            self._accept_first(request, page, runs)
            return []
        self.total = max(self.total, page.total_entries)
        self._arrived[request.index] = TiePage(request.offset, runs, page.total_entries, request.limit or 0)
        self._verify()
        return []

    def _accept_first(self, request: PageRequest, page: RunsPage, runs: tuple[DagRun, ...]) -> None:
        if self._anchor is not None and self._anchor not in {run_digest(r) for r in runs}:
            # The run the last tick stopped at moved (runs before it deleted, or itself cleared or deleted):
            # read the whole group again; what was delivered is recognised in `seen`.
            self._anchor, self._first_offset, self.full = None, 0, True
            return
        self.total = page.total_entries
        self.pages.append(TiePage(request.offset, runs, page.total_entries, len(page.runs)))
        if not runs or request.offset + len(runs) >= page.total_entries:
            self.complete = True
            return
        # The server's page size (api.maximum_page_limit may be below what we ask for). A page of one run
        # cannot overlap the next, so with such a server pages follow each other unchecked.
        self._page_len = len(page.runs)
        self._base = request.offset
        self._mode = "rest"

    def _verify(self) -> None:
        if self.done:
            return
        outcome = chain_pages(self.pages, self._arrived, self._page_len)
        if outcome == "complete":
            self.complete = True
        elif outcome == "broken":
            self.broken = True


@dataclass(eq=False)
class CountSpan(Span):
    """Runs with ``lo <= end_date < hi`` that were all read once settled: checked by their number.

    `expected` is how many runs end there if nothing changed since they were read (delivered, minus those found
    gone). One request of one run asks Airflow's count. Equal: nothing to read. Different: split in two, or,
    when small enough, read again by keyset (`replaced`: the spans that follow it do the work).
    """

    lo: datetime
    hi: datetime
    tick: TickContext
    expected: int
    complete: bool = False
    replaced: bool = False
    #: What Airflow counted.
    found: int | None = None
    error: Exception | None = None
    _sent: bool = False

    def next_request(self) -> PageRequest | None:
        if self._sent or self.error is not None:
            return None
        self._sent = True
        return PageRequest(end_date_gte=self.lo, end_date_lte=self.hi - ONE_MICROSECOND, limit=1)

    def accept(self, request: PageRequest, page: RunsPage) -> list[Span]:
        self.found = page.total_entries
        if page.total_entries == self.expected:
            self.complete = True
            return []
        self.replaced = True
        # Splitting costs two counts; reading a part of a page or two costs about as much, and is exact.
        if page.total_entries > 2 * self.tick.page_size and self.expected > 2 * self.tick.page_size:
            at = self.tick.split_point(self.lo, self.hi)
            if at is not None and self.tick.may_add_spans(1):
                return [
                    CountSpan(self.lo, at, self.tick, self.tick.expected_in(self.lo, at)),
                    CountSpan(at, self.hi, self.tick, self.tick.expected_in(at, self.hi)),
                ]
        if self.hi - self.lo <= ONE_MICROSECOND:
            return [TieSpan(at=self.lo, tick=self.tick, read_whole=True)]
        span = TimeSpan(self.lo, self.hi, self.tick)
        span.reread = True
        return [span]
