"""One tick of the completion feed: check the late-commit window, read on from where the keyset stopped.

A tick has two lists of spans, read concurrently:

* *verification* of ``[watermark, read_to)``, the part already read that late commits may still join: counts
  of the part read once it was settled (``[watermark, full_from)``), and a re-read by content of the most
  recent part (``[full_from, read_to)``, the runs that ended within ``full_reread_window`` of the last tick);
* the *keyset*, from ``read_to`` on: new completions, delivered as a prefix in end-date order.

Neither waits for the other: new completions keep flowing while the verification is behind, and the
watermark only passes what was verified. See the package docstring and docs/cursor.md.
"""

from __future__ import annotations

import contextvars
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from ..airflow.errors import AirflowError
from ..airflow.models import DagRun, RunsPage
from .spans import MAX_SPANS, ONE_MICROSECOND, CountSpan, PageRequest, RangeSpan, Span, TieSpan, TimeSpan
from .state import FeedState, iso, run_digest

#: A cursor this far beyond the late-commit window behind Airflow's clock is catching up, not polling.
_BEHIND = timedelta(minutes=1)
#: A window holding at most this share of a page of delivered runs is simply read again (one request).
_SMALL_WINDOW = 0.5
#: Count slices of the settled part of the window are at least this many pages of delivered runs each.
_COUNT_SLICE_PAGES = 4


class FinishedRunsSource(Protocol):
    """What the feed needs from Airflow (implemented by `AirflowInstance`)."""

    def list_finished_runs(
        self,
        *,
        end_date_gte: datetime,
        end_date_lte: datetime | None = None,
        order_by: Literal["end_date", "id"] = "end_date",
        offset: int = 0,
        limit: int | None = None,
        dag_ids: Sequence[str] | None = None,
    ) -> RunsPage: ...

    def server_time(self) -> datetime | None: ...


@dataclass
class PollResult:
    """What one tick of the feed found."""

    completions: list[DagRun]
    state: FeedState
    #: True when the tick read everything Airflow had; False when it stopped at its budget or event cap.
    caught_up: bool
    requests: int
    pages: int
    #: The error that stopped the tick after some pages were read (their completions are still delivered).
    interrupted: Exception | None = None


class InlineExecutor(Executor):
    """Runs each call when it is submitted: one request at a time, in a fixed order (tests, `parallel=1`)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller through the future, like a pool would
            future.set_exception(exc)
        return future


@dataclass
class _Tick:
    """What the spans of one tick share (only the poller's thread touches it)."""

    state: FeedState
    parallel: int
    page_size: int = 100
    server_time: datetime | None = None
    newest_end: datetime | None = None
    pages: int = 0
    requests: int = 0
    #: Runs read that were not delivered by an earlier tick (what the run cap counts).
    new_runs: int = 0
    spans: int = 1
    #: Completions delivered so far, in end-date order, and how many leading spans they came from.
    out: list[DagRun] = field(default_factory=list)
    delivered_spans: int = 0
    on_completions: Callable[[Sequence[DagRun]], None] | None = None
    #: Verification spans already delivered (or settled by a count).
    settled_spans: set[int] = field(default_factory=set)
    #: Where the verification's re-read by content starts (before it: counts).
    recount_to: datetime | None = None
    _resume: tuple[datetime, int, str | None] | None = field(default=None)

    #: The end dates of `seen` at the tick's start, sorted, and the running sum of the runs expected there.
    keys: list[str] = field(default_factory=list)
    _cumulative: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.state.tie_at is not None:
            self._resume = (self.state.tie_at, self.state.tie_offset, self.state.tie_anchor)
        self.keys = sorted(self.state.seen)
        total = 0
        self._cumulative = [0]
        for key in self.keys:
            total += len(self.state.seen[key]) - self.state.gone.get(key, 0)
            self._cumulative.append(total)

    def seen_at(self, instant: datetime) -> int:
        return self.state.seen_at(instant)

    def expected_at(self, instant: datetime) -> int:
        return self.state.expected_at(instant)

    def _bound(self, instant: datetime | None) -> int:
        return len(self.keys) if instant is None else bisect_left(self.keys, iso(instant))

    def expected_in(self, lo: datetime, hi: datetime | None) -> int:
        """Runs expected with ``lo <= end_date < hi`` (as of the tick's start; counts only check that part)."""
        return self._cumulative[self._bound(hi)] - self._cumulative[self._bound(lo)]

    def cumulative_at(self, instant: datetime) -> int:
        return self._cumulative[self._bound(instant)]

    def key_reaching(self, target: float) -> datetime | None:
        """The first end date of `seen` before which at least `target` runs are expected."""
        index = bisect_left(self._cumulative, target)
        return datetime.fromisoformat(self.keys[index - 1]) if 0 < index <= len(self.keys) else None

    def keys_in(self, lo: datetime, hi: datetime | None) -> list[str]:
        return self.keys[self._bound(lo) : self._bound(hi)]

    def split_point(self, lo: datetime, hi: datetime) -> datetime | None:
        """An end date inside ``(lo, hi)`` with about half of the expected runs on each side, if there is one."""
        a, b = self._bound(lo), self._bound(hi)
        if b - a < 1:
            return None
        half = (self._cumulative[a] + self._cumulative[b]) / 2
        crossing = min(max(bisect_left(self._cumulative, half, a + 1, b + 1) - 1, a), b - 1)
        point = datetime.fromisoformat(self.keys[crossing])
        if crossing == a:
            # The first end date holds half the runs or more: the left part ends right after it.
            point += ONE_MICROSECOND
        return point if lo < point < hi else None

    def take_span(self, span: Span) -> None:
        """Deliver what a span read (its new completions) and note which runs its whole range still holds."""
        if isinstance(span, TieSpan):
            self.take_tie_pages(span)
            if span.complete and span.full and not span.skipped and not span.broken:
                found: dict[str, set[str]] = {iso(span.at): set()}
                for page in span.pages:
                    found[iso(span.at)].update(run_digest(r) for r in page.runs)
                self.state.record_present(span.at, span.at + ONE_MICROSECOND, found, self.keys)
            return
        if isinstance(span, (TimeSpan, RangeSpan)):
            self.take(span.runs)
            if isinstance(span, TimeSpan):
                hi = span.tie_at if span.tie_at is not None else span.hi
                if not span.complete:
                    hi = span.position  # the keyset read everything before it
            else:
                hi = span.hi
            found = {}
            for run in span.runs:
                if run.end_date is not None:
                    found.setdefault(iso(run.end_date), set()).add(run_digest(run))
            self.state.record_present(span.lo, hi, found, self.keys)

    def take(self, runs: Sequence[DagRun]) -> None:
        """Deliver the runs not delivered before (by an earlier tick, or an overlapping page of this one)."""
        batch = [
            run
            for run in runs
            # Not a completion for us: the filter excludes both; a server ignoring it must not make us deliver
            # a run twice.
            if run.end_date is not None and run.end_date >= self.state.watermark and self.state.mark_seen(run)
        ]
        self.out.extend(batch)
        if batch and self.on_completions is not None:
            self.on_completions(batch)

    def take_tie_pages(self, span: TieSpan) -> None:
        """Deliver the tie span's verified pages not delivered yet (they are a prefix of its group)."""
        for page in span.pages[span.delivered_pages :]:
            self.take(page.runs)
        span.delivered_pages = len(span.pages)

    def joined_while_resumed(self, span: TieSpan) -> bool:
        """A group read from where a tick stopped (or skipped) holds more runs than were delivered at its instant."""
        return not span.skipped and not span.full and self.state.seen_at(span.at) < span.total

    def resume_for(self, instant: datetime) -> tuple[int, str | None] | None:
        if self._resume is not None and self._resume[0] == instant:
            return self._resume[1], self._resume[2]
        return None

    def may_add_spans(self, count: int) -> bool:
        if self.spans + count > MAX_SPANS:
            return False
        self.spans += count
        return True

    def note(self, page: RunsPage) -> None:
        self.pages += 1
        self.new_runs += sum(
            1 for run in page.runs if run.end_date is not None and not self.state.is_seen(run)
        )
        if self.server_time is None:
            # Airflow's clock at the tick's first answer: the late-commit window is measured on it.
            self.server_time = page.server_time
        for run in page.runs:
            if run.end_date is not None and (self.newest_end is None or run.end_date > self.newest_end):
                self.newest_end = run.end_date


class _FeedSettings:
    """What the run feed and the task feed are told about a tick (validated once, here)."""

    def __init__(
        self,
        *,
        late_commit_window: timedelta,
        full_reread_window: timedelta,
        time_budget: float,
        max_completions: int,
        parallel: int,
        page_size: int,
        clock: Callable[[], float],
        executor: Executor | None,
    ) -> None:
        if late_commit_window < timedelta(0):
            raise ValueError("late_commit_window must not be negative")
        if full_reread_window < timedelta(0):
            raise ValueError("full_reread_window must not be negative")
        if parallel < 1:
            raise ValueError(f"parallel must be >= 1, got {parallel}")
        self._late = late_commit_window
        self._fresh = min(full_reread_window, late_commit_window)
        self._budget = time_budget
        self._max = max_completions
        self._parallel = parallel
        self._page_size = page_size
        self._clock = clock
        self._executor = executor

    def _executor_for_tick(self) -> tuple[Executor, bool]:
        """The tick's executor, and whether the tick owns it (a thread pool of `parallel` threads, shut down
        at the tick's end) or was given one (tests pass an `InlineExecutor` for a fixed order of requests)."""
        if self._executor is not None:
            return self._executor, False
        if self._parallel > 1:
            return ThreadPoolExecutor(self._parallel, thread_name_prefix="airpeer-feed"), True
        return InlineExecutor(), False


class CompletionFeed(_FeedSettings):
    """Reads new completions from Airflow, exactly once, within a time budget.

    Args:
        source: the Airflow instance.
        late_commit_window: how long after its end date a run may still become visible (commit delay plus
            clock skew between Airflow's own hosts). Runs that ended within this window before Airflow's
            current time are checked each tick: by content if they ended within `full_reread_window` of the
            last tick, by counts of their number before that.
        full_reread_window: runs are read again by content until they ended this long before Airflow's clock
            at a tick that read them (at most `late_commit_window`); see docs/cursor.md, "Counts".
        time_budget: seconds after which a tick stops sending new requests.
        max_completions: a tick stops sending new requests once it has read this many runs.
        parallel: at most this many requests in flight at once (1 reads one page after the other).
        page_size: runs per page asked of Airflow (it may send fewer), to size the spans of a tick.
        clock: monotonic clock, for tests.
        executor: runs the requests (default: a thread pool of `parallel` threads per tick; tests pass an
            `InlineExecutor` to make the order of requests deterministic).
    """

    def __init__(
        self,
        source: FinishedRunsSource,
        *,
        late_commit_window: timedelta = timedelta(minutes=5),
        full_reread_window: timedelta = timedelta(seconds=30),
        time_budget: float = 8.0,
        max_completions: int = 5000,
        parallel: int = 4,
        page_size: int = 100,
        clock: Callable[[], float] = time.monotonic,
        executor: Executor | None = None,
    ) -> None:
        _FeedSettings.__init__(
            self,
            late_commit_window=late_commit_window,
            full_reread_window=full_reread_window,
            time_budget=time_budget,
            max_completions=max_completions,
            parallel=parallel,
            page_size=page_size,
            clock=clock,
            executor=executor,
        )
        self._source = source

    def poll(
        self, state: FeedState, on_completions: Callable[[Sequence[DagRun]], None] | None = None
    ) -> PollResult:
        """Read from `state`'s position; returns new completions in end-date order and the next state.

        `state` is not modified; if the tick's first request fails the error is raised and the caller keeps
        its old cursor. `on_completions`, if given, is called with the completions in end-date order as they
        become final, while later pages are still in flight (so the caller's work on them overlaps the
        wait); an error it raises fails the tick.
        """
        state = state.copy()
        tick = _Tick(
            state=state, parallel=self._parallel, page_size=self._page_size, on_completions=on_completions
        )
        watermark, start, recount_to = state.watermark, state.position, state.recount_to
        if tick.expected_in(watermark, None) <= _SMALL_WINDOW * self._page_size:
            # Fewer runs than half a page since the watermark: one keyset page from it is cheapest (and exact).
            start = recount_to = watermark
        tick.recount_to = recount_to
        verify: list[Span] = self._count_spans(watermark, recount_to, tick)
        if start > recount_to:
            verify += self._cut_spans(recount_to, start, state, tick)
        main = self._main_spans(start, state, tick)
        self._read(verify, main, tick)
        return self._merge(verify, main, tick, state, start, recount_to)

    def _main_spans(self, lo: datetime, state: FeedState, tick: _Tick) -> list[Span]:
        if state.tie_at is not None and state.tie_at <= lo:
            # Stopped inside a group of tied runs where the keyset goes on: nothing before it is left to read.
            tick.spans += 1
            return [
                TieSpan(at=state.tie_at, tick=tick),
                TimeSpan(state.tie_at + ONE_MICROSECOND, None, tick),
            ]
        return self._cut_spans(lo, None, state, tick)

    def _count_spans(self, lo: datetime, hi: datetime, tick: _Tick) -> list[Span]:
        """Count slices of ``[lo, hi)``, the part of the window read once settled: one request each, all at once.

        A few slices of at least `_COUNT_SLICE_PAGES` pages of runs each, cut at end dates by what was
        delivered there (leaving a slot for the keyset and one for the recent part); an idle tick's cost
        does not grow with the runs in the window.
        """
        if hi <= lo:
            return []
        expected = tick.expected_in(lo, hi)
        slices = max(1, min(self._parallel - 2, expected // (_COUNT_SLICE_PAGES * self._page_size)))
        points = [lo]
        base = tick.cumulative_at(lo)
        for i in range(1, slices):
            at = tick.key_reaching(base + expected * i / slices)
            if at is not None and points[-1] < at < hi and tick.expected_in(points[-1], at) > 0:
                points.append(at)
        ends = [*points[1:], hi]
        spans: list[Span] = [
            CountSpan(a, b, tick, tick.expected_in(a, b)) for a, b in zip(points, ends, strict=True)
        ]
        tick.spans += len(spans)
        return spans

    def _cut_spans(self, lo: datetime, hi: datetime | None, state: FeedState, tick: _Tick) -> list[Span]:
        """The spans for ``[lo, hi)`` a tick starts with, so that its first pages go out at once.

        The range is cut where what was delivered there fills about a page; a group of tied runs delivered
        there that fills a page (or the one a tick stopped inside) is a tie span from the start, instead of
        being found by a first page full of it. When an open range starts far behind Airflow's clock (the
        first tick importing its lookback, a sensor that was stopped), the rest up to Airflow's clock is cut
        into `parallel` equal slices. The last span reaches `hi`; a span holding more than it seemed splits
        again after its first page.
        """
        spans: list[Span]
        if self._parallel <= 1:
            spans = [TimeSpan(lo, hi, tick)]
        else:
            # Where spans end, in order; True: a group of tied runs is read at that instant.
            cuts: list[tuple[datetime, bool]] = []
            start, filled = lo, 0
            for key in tick.keys_in(lo, hi):
                at, count = datetime.fromisoformat(key), len(state.seen[key])
                if count >= self._page_size or at == state.tie_at:
                    cuts.append((at, True))
                    start, filled = at + ONE_MICROSECOND, 0
                    continue
                if filled >= self._page_size - 1 and at > start:
                    cuts.append((at, False))
                    start, filled = at, 0
                filled += count
            if hi is None:
                now = self._source.server_time()
                behind = _BEHIND + (self._late if lo <= state.watermark else timedelta(0))
                if now is not None and now - start > behind:
                    step = (now - start) / self._parallel
                    cuts.extend((start + step * i, False) for i in range(1, self._parallel))
            budget = max(0, (MAX_SPANS - 1 - tick.spans) // 2)
            spans = []
            for at, tie in cuts[:budget]:
                if at > lo:
                    spans.append(TimeSpan(lo, at, tick))
                if tie:
                    spans.append(TieSpan(at=at, tick=tick))
                    lo = at + ONE_MICROSECOND
                else:
                    lo = at
            if hi is None or lo < hi:
                spans.append(TimeSpan(lo, hi, tick))
        tick.spans += len(spans)
        return spans

    # ------------------------------------------------------------------ reading

    def _read(self, verify: list[Span], main: list[Span], tick: _Tick) -> None:
        executor, own_pool = self._executor_for_tick()
        started = self._clock()
        in_flight: dict[Future[RunsPage], tuple[list[Span], Span, PageRequest]] = {}
        over = stopping = False
        try:
            while True:
                if not stopping:
                    self._submit(tick, verify, main, in_flight, executor, over=over)
                if not in_flight:
                    return
                done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
                # Handle answers in span order so a tick is reproducible with a deterministic executor.
                order = {id(span): i for i, span in enumerate([*verify, *main])}
                for future in sorted(done, key=lambda f: (order[id(in_flight[f][1])], in_flight[f][2].index)):
                    spans, span, request = in_flight.pop(future)
                    try:
                        page = future.result()
                    except AirflowError as exc:
                        if tick.pages == 0:
                            raise  # the tick's first request: fail the tick, keep the cursor
                        span.fail(request, exc)
                        continue
                    tick.note(page)
                    added = span.accept(request, page)
                    if added:
                        at = spans.index(span) + 1
                        spans[at:at] = added
                over = self._clock() - started >= self._budget or tick.new_runs >= self._max
                # A tick never stands still: both the keyset and the verification move before it stops.
                if over and _progressed(main) and _verified_some(verify, tick):
                    stopping = True
                if not stopping:
                    self._submit(tick, verify, main, in_flight, executor, over=over)
                self._deliver_ready(main, tick)
                self._deliver_verified(verify, tick)
        finally:
            if own_pool:
                executor.shutdown(wait=True)

    def _submit(
        self,
        tick: _Tick,
        verify: list[Span],
        main: list[Span],
        in_flight: dict[Future[RunsPage], tuple[list[Span], Span, PageRequest]],
        executor: Executor,
        *,
        over: bool,
    ) -> None:
        """Send the earliest requests first: when a tick stops, what it read is then mostly one prefix.

        The verification (counts first) goes before the keyset, but leaves the keyset a request slot, so a
        window that must be read again never holds new completions back. Past its budget, a tick only sends
        what the list that has not moved yet needs.
        """
        verify_slots = self._parallel - 1 if self._parallel > 1 and _pending(main) else self._parallel
        for spans, slots in ((verify, verify_slots), (main, self._parallel)):
            if over and (_verified_some(spans, tick) if spans is verify else _progressed(spans)):
                continue
            used = sum(1 for owner, _, _ in in_flight.values() if owner is spans)
            for span in spans:
                while len(in_flight) < self._parallel and used < slots:
                    request = span.next_request()
                    if request is None:
                        break
                    # Each request runs in a copy of this context: the instance's deadline lives in a contextvar.
                    future = executor.submit(contextvars.copy_context().run, self._fetch, request)
                    tick.requests += 1
                    used += 1
                    in_flight[future] = (spans, span, request)
                if len(in_flight) >= self._parallel or used >= slots:
                    break

    @staticmethod
    def _deliver_verified(spans: list[Span], tick: _Tick) -> None:
        """Deliver what the verification found as soon as a span of it is read whole (order does not matter:
        these are late commits, older than runs already delivered)."""
        for span in spans:
            if id(span) in tick.settled_spans:
                continue
            if isinstance(span, (CountSpan, RangeSpan)) and span.replaced:
                tick.settled_spans.add(id(span))
            elif isinstance(span, (TimeSpan, RangeSpan, TieSpan)) and span.complete:
                tick.take_span(span)
                tick.settled_spans.add(id(span))
            elif isinstance(span, CountSpan) and span.complete:
                tick.settled_spans.add(id(span))
            elif isinstance(span, TieSpan):
                tick.take_tie_pages(span)

    @staticmethod
    def _deliver_ready(spans: list[Span], tick: _Tick) -> None:
        """Deliver what `_merge` would deliver of the leading spans and cannot change any more: spans read whole,
        and the verified pages of the first tie span (which `_merge` delivers even if it stops there).

        A span is only ever inserted after one that is still being read, so the delivered ones stay put.
        """
        while tick.delivered_spans < len(spans):
            span = spans[tick.delivered_spans]
            if isinstance(span, RangeSpan) and span.replaced:
                pass
            elif isinstance(span, (TimeSpan, RangeSpan)) and span.complete:
                tick.take_span(span)
            elif isinstance(span, TieSpan):
                tick.take_tie_pages(span)
                if not span.complete or tick.joined_while_resumed(span):
                    return
                tick.take_span(span)
            else:
                return
            tick.delivered_spans += 1

    def _fetch(self, request: PageRequest) -> RunsPage:
        return self._source.list_finished_runs(
            end_date_gte=request.end_date_gte,
            end_date_lte=request.end_date_lte,
            order_by=request.order_by,
            offset=request.offset,
            limit=request.limit,
        )

    # ------------------------------------------------------------------ merging

    def _merge(
        self,
        verify: list[Span],
        spans: list[Span],
        tick: _Tick,
        state: FeedState,
        start: datetime,
        recount_to: datetime,
    ) -> PollResult:
        """Deliver the keyset's spans in order up to the first one not read completely, and what the
        verification read; move the cursor: the keyset's position, and the watermark up to what was verified."""
        interrupted: Exception | None = None
        stop_at: datetime | None = None  # None: every span was read
        stop_tie: tuple[datetime, int, str | None] | None = None
        resume = (state.tie_at, state.tie_offset, state.tie_anchor) if state.tie_at is not None else None

        for span in spans[tick.delivered_spans :]:
            if isinstance(span, TimeSpan):
                tick.take_span(span)
                if not span.complete:
                    stop_at, interrupted = span.position, span.error
                    if span.position > span.lo:
                        # Its last page ended among the runs at `position`, which may be only partly read:
                        # next time that instant is read whole, never skipped on its count (see TieSpan).
                        stop_tie = (span.position, 0, None)
                    break
                continue
            if isinstance(span, RangeSpan):
                if span.replaced:
                    continue  # the keyset span that re-read it follows
                if not span.complete:
                    # Nothing of it is delivered: the next tick reads on from its start.
                    stop_at, interrupted = span.lo, span.error
                    break
                tick.take_span(span)
                continue
            assert isinstance(span, TieSpan)
            tick.take_tie_pages(span)
            if span.complete and not tick.joined_while_resumed(span):
                tick.take_span(span)
            if not span.complete:
                stop_at, interrupted = span.at, span.error
                point = span.stop_point
                if point is not None:
                    stop_tie = (span.at, point[0], point[1])
                break
            if tick.joined_while_resumed(span):
                # Read from where a tick stopped, yet fewer runs were delivered than the group holds: runs
                # joined it before that point. Read the whole group from its start next tick.
                stop_at, stop_tie = span.at, (span.at, 0, None)
                break

        # The verification: deliver what it read, find the first point it did not verify.
        self._deliver_verified(verify, tick)
        unverified: datetime | None = None
        unread_recent: datetime | None = None  # the first point of [recount_to, start) not read again
        for span in verify:
            missed, error = _unverified_at(span, tick)
            if missed is None:
                continue
            if isinstance(span, TimeSpan):
                tick.take_span(span)  # what it read before `missed` (late commits) is delivered
            if unverified is None:
                unverified, interrupted = missed, interrupted or error
            if missed >= recount_to:
                unread_recent = missed
                break

        settled = self._settled(tick, state, self._late)
        recent = self._settled(tick, state, self._fresh)
        caught_up = stop_at is None and unverified is None
        if stop_at is None:
            # The keyset read all Airflow had when asked: it reads on from Airflow's clock at the tick's start
            # (runs ending after it were read, and are read again; what commits late before it is verified).
            position = max(start, tick.server_time or tick.newest_end or start)
            state.clear_tie()
        else:
            position = stop_at
            if stop_tie is not None:
                state.stop_in_tie(*stop_tie)
            elif resume is not None and stop_at <= resume[0]:
                state.stop_in_tie(*resume)  # stopped before the group it was to resume: keep the resume point
            else:
                state.clear_tie()
        state.advance(min(settled, unverified or position, position))
        state.read_to = max(position, state.watermark)
        # Read by content next tick: what ended within the recent window, and what this tick did not re-read.
        full_from = min(recent, position, unread_recent or position)
        state.full_from = max(full_from, state.watermark)
        return PollResult(
            completions=tick.out,
            state=state,
            caught_up=caught_up,
            requests=tick.requests,
            pages=tick.pages,
            interrupted=interrupted,
        )

    @staticmethod
    def _settled(tick: _Tick, state: FeedState, window: timedelta) -> datetime:
        """Airflow's clock at the tick's start minus `window` (the watermark may go at most to that minus
        the late-commit window)."""
        if tick.server_time is not None:
            return tick.server_time - window
        if tick.newest_end is not None:
            # No Date header: Airflow's own newest end date is never ahead of its clock.
            return tick.newest_end - window
        return state.watermark


def _progressed(spans: Sequence[Span]) -> bool:
    """Whether the prefix read so far reaches past where the tick started (a tick must never stand still)."""
    for span in spans:
        if isinstance(span, CountSpan):
            if span.replaced:
                continue
            return span.complete
        if isinstance(span, TimeSpan):
            if not span.complete:
                return span.position > span.lo
            if span.tie_at is None or span.tie_at > span.lo:
                return True
            continue  # it ran into a group of tied runs right where it started: that group must move
        if isinstance(span, RangeSpan):
            if span.replaced:
                continue
            return span.complete
        assert isinstance(span, TieSpan)
        if span.complete:
            return True
        point = span.stop_point
        return point is not None and point != span.resumed_from
    return True


def _pending(spans: Sequence[Span]) -> bool:
    """Whether a list of spans may still send a request (it is not read whole and has not failed)."""
    for span in spans:
        if isinstance(span, (CountSpan, RangeSpan)) and span.replaced:
            continue
        if isinstance(span, TieSpan):
            if not span.done and span.error is None:
                return True
            continue
        if not getattr(span, "complete", False) and span.error is None:
            return True
    return False


def _verified_some(spans: Sequence[Span], tick: _Tick) -> bool:
    """Whether the verification verified a first part of both what it counts and what it reads again by
    content (it cannot resume inside a span; a part that never moved would hold the watermark back)."""
    recount_to = tick.recount_to if tick.recount_to is not None else tick.state.watermark
    counted: bool | None = None
    for span in spans:
        point, _ = _unverified_at(span, tick)
        if point is None:
            continue
        if _start(span) >= recount_to:
            return counted is not False and point > recount_to
        if counted is None:
            counted = point > tick.state.watermark
    return counted is not False


def _start(span: Span) -> datetime:
    if isinstance(span, TieSpan):
        return span.at
    assert isinstance(span, (CountSpan, TimeSpan, RangeSpan))
    return span.lo


def _unverified_at(span: Span, tick: _Tick) -> tuple[datetime | None, Exception | None]:
    """The first end date a verification span did not verify, and why (None: it verified its whole range)."""
    if isinstance(span, CountSpan):
        return (None, None) if span.complete or span.replaced else (span.lo, span.error)
    if isinstance(span, RangeSpan):
        return (None, None) if span.complete or span.replaced else (span.lo, span.error)
    if isinstance(span, TimeSpan):
        return (None, None) if span.complete else (span.position, span.error)
    assert isinstance(span, TieSpan)
    return (None, None) if span.complete else (span.at, span.error)
