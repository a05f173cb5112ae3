"""The parts one tick reads: ranges of end dates (keyset order) and groups of runs sharing one end date.

A tick reads ``end_date >= watermark`` as an ordered list of spans. Each span is read by its own sequence of
pages and may split off further spans after its first page, so several pages can be in flight at once; the
poller (``poll.py``) merges the spans in list order, which is end-date order.

* ``TimeSpan(lo, hi)``: runs with ``lo <= end_date < hi``, read by keyset on ``end_date`` (the next page starts
  at the last end date read, so a run inserted or deleted between two pages cannot make us skip one). After
  its first page a span that has more than a page left splits the rest of its range into slices of about a
  page each, read concurrently. Slices are disjoint filters, so together they read exactly what one keyset
  walk would.
* ``TieSpan(at)``: every run with ``end_date == at`` when a whole page shares that instant (the keyset cannot
  move). Read in primary-key order by offset; consecutive pages overlap by one run, and that run must match,
  so a run deleted meanwhile (which shifts offsets) is detected instead of making us skip one. Pages after
  the first are independent requests and go out concurrently.
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
    server_time: datetime | None

    def seen_at(self, instant: datetime) -> int: ...

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
            return [
                TieSpan(at=last_end, tick=self.tick),
                TimeSpan(last_end + ONE_MICROSECOND, self.hi, self.tick),
            ]
        self.runs.extend(runs)
        self.position = last_end
        if self._pages == 1:
            return self._split(page, len(runs), first_end, last_end)
        return []

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
        added: list[Span] = [*spans_between(bounds, self.hi, self.tick)]
        self.hi = bounds[0]
        return added


@dataclass(eq=False)
class TiePage:
    offset: int
    runs: tuple[DagRun, ...]
    total: int
    requested: int


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
        if resume is not None:
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
        if self._page_len > 1:
            offset = self._base + (self._next_index - 1) * (self._page_len - 1)
        else:
            offset = self._base + self._next_index
        if offset >= self.total:
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
            if self.tick.seen_at(self.at) >= page.total_entries:
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
        self._base = request.offset + len(page.runs) - 1
        self._mode = "rest"

    def _verify(self) -> None:
        """Append arrived pages in order while each one starts with the run the previous one ended with."""
        while not self.done:
            index = len(self.pages)
            page = self._arrived.pop(index, None)
            if page is None:
                return
            previous = self.pages[-1]
            if not page.runs:
                # The group ended before this page (runs deleted meanwhile, or its size was overestimated).
                if previous.offset + len(previous.runs) < page.total:
                    self.broken = True
                else:
                    self.complete = True
                return
            if self._page_len > 1 and run_digest(page.runs[0]) != run_digest(previous.runs[-1]):
                self.broken = True
                return
            self.pages.append(page)
            if len(page.runs) < page.requested or page.offset + len(page.runs) >= page.total:
                self.complete = True
