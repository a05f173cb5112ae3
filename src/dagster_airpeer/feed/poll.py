"""One tick of the completion feed: read the spans from the watermark on, concurrently, and merge them in order.

See the package docstring and docs/cursor.md for why this delivers every completion exactly once.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from ..airflow.errors import AirflowError
from ..airflow.models import DagRun, RunsPage
from .spans import MAX_SPANS, ONE_MICROSECOND, PageRequest, RangeSpan, Span, TieSpan, TimeSpan
from .state import FeedState

#: A cursor this far beyond the late-commit window behind Airflow's clock is catching up, not polling.
_BEHIND = timedelta(minutes=1)


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
    _resume: tuple[datetime, int, str | None] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.state.tie_at is not None:
            self._resume = (self.state.tie_at, self.state.tie_offset, self.state.tie_anchor)

    def seen_at(self, instant: datetime) -> int:
        return self.state.seen_at(instant)

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


class CompletionFeed:
    """Reads new completions from Airflow, exactly once, within a time budget.

    Args:
        source: the Airflow instance.
        late_commit_window: how long after its end date a run may still become visible (commit delay plus
            clock skew between Airflow's own hosts). Runs that ended within this window before Airflow's
            current time are re-read each tick.
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
        time_budget: float = 8.0,
        max_completions: int = 5000,
        parallel: int = 4,
        page_size: int = 100,
        clock: Callable[[], float] = time.monotonic,
        executor: Executor | None = None,
    ) -> None:
        if late_commit_window < timedelta(0):
            raise ValueError("late_commit_window must not be negative")
        if parallel < 1:
            raise ValueError(f"parallel must be >= 1, got {parallel}")
        self._source = source
        self._late = late_commit_window
        self._budget = time_budget
        self._max = max_completions
        self._parallel = parallel
        self._page_size = page_size
        self._clock = clock
        self._executor = executor

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
        tick = _Tick(state=state, parallel=self._parallel, on_completions=on_completions)
        spans: list[Span]
        if state.tie_at is not None and state.tie_at <= state.watermark:
            # Stopped inside a group of tied runs that was settled: nothing before it can still appear.
            spans = [
                TieSpan(at=state.tie_at, tick=tick),
                TimeSpan(state.tie_at + ONE_MICROSECOND, None, tick),
            ]
        else:
            spans = self._window_spans(state, tick)
        self._read(spans, tick)
        return self._merge(spans, tick, state)

    def _window_spans(self, state: FeedState, tick: _Tick) -> list[Span]:
        """The spans a tick starts with, so that its first pages go out at once instead of one by one.

        The late-commit window it re-reads is cut where what it delivered there fills about a page; a group of
        tied runs it delivered there that fills a page (or the one it stopped inside) is a tie span from the
        start, instead of being found by a first page full of it. When the cursor is far behind Airflow's clock
        (the first tick importing its lookback, a sensor that was stopped), the rest up to Airflow's clock is
        cut into `parallel` equal slices. The last span is open-ended; a span holding more than it seemed
        splits again after its first page.
        """
        if self._parallel <= 1:
            return [TimeSpan(state.watermark, None, tick)]
        # Where spans end, in order; True: a group of tied runs is read at that instant.
        cuts: list[tuple[datetime, bool]] = []
        lo, filled = state.watermark, 0
        for key in sorted(state.seen):
            at, count = datetime.fromisoformat(key), len(state.seen[key])
            if at < lo:
                continue
            if count >= self._page_size or at == state.tie_at:
                cuts.append((at, True))
                lo, filled = at + ONE_MICROSECOND, 0
                continue
            if filled >= self._page_size - 1 and at > lo:
                cuts.append((at, False))
                lo, filled = at, 0
            filled += count
        now = self._source.server_time()
        if now is not None and now - lo > self._late + _BEHIND:
            step = (now - lo) / self._parallel
            cuts.extend((lo + step * i, False) for i in range(1, self._parallel))
        spans: list[Span] = []
        lo = state.watermark
        for at, tie in cuts[: (MAX_SPANS - 1) // 2]:
            if at > lo:
                spans.append(TimeSpan(lo, at, tick))
            if tie:
                spans.append(TieSpan(at=at, tick=tick))
                lo = at + ONE_MICROSECOND
            else:
                lo = at
        spans.append(TimeSpan(lo, None, tick))
        tick.spans = len(spans)
        return spans

    # ------------------------------------------------------------------ reading

    def _read(self, spans: list[Span], tick: _Tick) -> None:
        own_pool = self._executor is None and self._parallel > 1
        executor: Executor = (
            self._executor
            if self._executor is not None
            else ThreadPoolExecutor(self._parallel, thread_name_prefix="airpeer-feed")
            if own_pool
            else InlineExecutor()
        )
        started = self._clock()
        in_flight: dict[Future[RunsPage], tuple[Span, PageRequest]] = {}
        stopping = False
        try:
            while True:
                if not stopping:
                    self._submit(tick, spans, in_flight, executor)
                if not in_flight:
                    return
                done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
                # Handle answers in span order so a tick is reproducible with a deterministic executor.
                order = {id(span): i for i, span in enumerate(spans)}
                for future in sorted(done, key=lambda f: (order[id(in_flight[f][0])], in_flight[f][1].index)):
                    span, request = in_flight.pop(future)
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
                if over and _progressed(spans):
                    stopping = True
                if not stopping:
                    self._submit(tick, spans, in_flight, executor)
                self._deliver_ready(spans, tick)
        finally:
            if own_pool:
                executor.shutdown(wait=True)

    def _submit(
        self,
        tick: _Tick,
        spans: list[Span],
        in_flight: dict[Future[RunsPage], tuple[Span, PageRequest]],
        executor: Executor,
    ) -> None:
        """Send the earliest requests first: when a tick stops, what it read is then mostly one prefix."""
        for span in spans:
            while len(in_flight) < self._parallel:
                request = span.next_request()
                if request is None:
                    break
                # Each request runs in a copy of this context: the instance's deadline lives in a contextvar.
                future = executor.submit(contextvars.copy_context().run, self._fetch, request)
                tick.requests += 1
                in_flight[future] = (span, request)
            if len(in_flight) >= self._parallel:
                return

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
                tick.take(span.runs)
            elif isinstance(span, TieSpan):
                tick.take_tie_pages(span)
                if not span.complete or tick.joined_while_resumed(span):
                    return
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

    def _merge(self, spans: list[Span], tick: _Tick, state: FeedState) -> PollResult:
        """Deliver the spans in order up to the first one not read completely, and move the cursor there."""
        interrupted: Exception | None = None
        stop_at: datetime | None = None  # None: every span was read
        stop_tie: tuple[datetime, int, str | None] | None = None
        resume = (state.tie_at, state.tie_offset, state.tie_anchor) if state.tie_at is not None else None

        take = tick.take
        for span in spans[tick.delivered_spans :]:
            if isinstance(span, TimeSpan):
                take(span.runs)
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
                take(span.runs)
                continue
            assert isinstance(span, TieSpan)
            tick.take_tie_pages(span)
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

        settled = self._settled(tick, state)
        caught_up = stop_at is None
        if caught_up:
            new_watermark = settled
            state.clear_tie()
        else:
            assert stop_at is not None
            new_watermark = min(settled, stop_at)
            if stop_tie is not None:
                state.stop_in_tie(*stop_tie)
            elif resume is not None and stop_at <= resume[0]:
                state.stop_in_tie(*resume)  # stopped before the group it was to resume: keep the resume point
            else:
                state.clear_tie()
        state.advance(new_watermark)
        return PollResult(
            completions=tick.out,
            state=state,
            caught_up=caught_up,
            requests=tick.requests,
            pages=tick.pages,
            interrupted=interrupted,
        )

    def _settled(self, tick: _Tick, state: FeedState) -> datetime:
        """Where the watermark may go at most: Airflow's clock at the tick's start minus the late window."""
        if tick.server_time is not None:
            return tick.server_time - self._late
        if tick.newest_end is not None:
            # No Date header: Airflow's own newest end date is never ahead of its clock.
            return tick.newest_end - self._late
        return state.watermark


def _progressed(spans: Sequence[Span]) -> bool:
    """Whether the prefix read so far reaches past where the tick started (a tick must never stand still)."""
    for span in spans:
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
