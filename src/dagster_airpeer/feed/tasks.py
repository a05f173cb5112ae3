"""The task-instance feed: which Airflow task instances ended since the last tick, each exactly once.

The run feed (poll.py) pages through runs ordered by end date. Task instances cannot be read that way on
Airflow 2: its batch listing (``POST /api/v1/dags/~/dagRuns/~/taskInstances/list``) applies no order at all,
so two offset pages of one query may overlap or leave a row out. This feed therefore never pages through a
result: it reads **time ranges whose whole result fits in one page**. A range whose answer says it holds more
(``total_entries``) is cut into smaller ranges (at even steps of time and at the end dates of the rows it
returned, so a burst of completions is split where it lies) and those are read at once. Only a single
microsecond holding more than a page is read by offset pages, and accepted only when the distinct rows found
equal the count Airflow reported (Airflow 3 sorts them by primary key). The same algorithm runs on both
versions.

Everything else is the run feed's argument (docs/cursor.md, "Task instances"), on the same `FeedState`:

* a watermark that only moves to Airflow's clock at the tick's start minus ``late_commit_window``;
* the task instances delivered at or after it, by end date (``seen``), so a re-read delivers nothing twice;
* the part read already but not yet settled is read again each tick by content (by default the whole
  late-commit window: counts, which the run feed uses for the older part, cannot tell a cleared task instance
  from a late commit in the same slice, and clearing a failed task is everyday work);
* new completions are delivered as a prefix in end-date order, within a time budget and a cap; a tick that
  stops keeps the longest prefix it read whole, and the next one reads on from there.

A completion is one task instance in its final state (``success`` or ``failed``): a failed try that Airflow
retries is ``up_for_retry`` and is not listed, so a retry that succeeds is one completion. A task instance
cleared and run again ends with a new try number and a new end date: a new completion.
"""

from __future__ import annotations

import base64
import contextvars
import hashlib
import math
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol

from ..airflow.errors import AirflowError, AirflowResponseError
from ..airflow.models import TaskInstance, TaskInstancesPage
from .poll import _FeedSettings
from .spans import ONE_MICROSECOND
from .state import FeedState, iso

#: A range is cut into pieces expected to hold at most this share of a page, so most pieces fit in one.
_PIECE_FILL = 0.6
#: At most this many pieces from one cut (a range holding more is cut again once its pieces answer).
_MAX_PIECES = 256
#: At most this many ranges per tick: the rest waits for the next tick.
_MAX_RANGES = 4000
#: Offset pages of one crowded microsecond are read again at most this many times when they disagree.
_DENSE_TRIES = 3
#: Count slices of the settled part are at least this many pages of delivered task instances each.
_COUNT_SLICE_PAGES = 4
#: A window holding at most this share of a page of delivered task instances is simply read again.
_SMALL_WINDOW = 0.5
#: A cursor this far beyond the late-commit window behind Airflow's clock is catching up, not polling.
_BEHIND = timedelta(minutes=1)


class FinishedTaskInstancesSource(Protocol):
    """What the feed needs from Airflow (implemented by `AirflowInstance`)."""

    def list_finished_task_instances(
        self,
        *,
        end_date_gte: datetime,
        end_date_lte: datetime | None = None,
        dag_ids: Sequence[str] | None = None,
        offset: int = 0,
        limit: int | None = None,
        order_by: Literal["id", "end_date"] | None = None,
    ) -> TaskInstancesPage: ...

    def server_time(self) -> datetime | None: ...


def task_instance_digest(ti: TaskInstance) -> str:
    """A short, stable identity of one completion of a task instance (its end date is the group it is
    stored under). The try number tells a cleared-and-rerun task instance from its earlier completion."""
    raw = f"{ti.dag_id}\x1f{ti.run_id}\x1f{ti.task_id}\x1f{ti.map_index}\x1f{ti.try_number}\x1f{ti.state}"
    return base64.urlsafe_b64encode(hashlib.blake2b(raw.encode(), digest_size=9).digest()).decode("ascii")


@dataclass
class TaskPollResult:
    """What one tick of the task feed found."""

    completions: list[TaskInstance]
    state: FeedState
    #: True when the tick read everything Airflow had; False when it stopped at its budget, cap or an error.
    caught_up: bool
    requests: int
    pages: int
    #: The error that stopped part of the tick (what was read before it is still delivered).
    interrupted: Exception | None = None


@dataclass(eq=False)
class _Range:
    """Task instances with ``lo <= end_date < hi`` (hi None: no end), read whole or counted."""

    lo: datetime
    hi: datetime | None
    #: "count": compare Airflow's count with what was delivered; "content": read every row.
    kind: Literal["count", "content"]
    expected: int = 0
    status: Literal["pending", "asked", "complete", "split", "failed"] = "pending"
    items: list[TaskInstance] = field(default_factory=list)
    error: Exception | None = None
    #: A crowded microsecond: its offset pages (offset -> rows), the count each reported, tries so far.
    dense_pages: dict[int, tuple[TaskInstance, ...]] | None = None
    dense_totals: set[int] = field(default_factory=set)
    dense_tries: int = 0
    asked: set[int] = field(default_factory=set)
    in_flight: int = 0
    delivered: bool = False

    @property
    def done(self) -> bool:
        return self.status in ("complete", "split", "failed")


@dataclass(frozen=True)
class _Request:
    range: _Range
    offset: int
    limit: int


class _Part:
    """An ordered list of ranges covering one part of the tick (a split replaces a range by its pieces)."""

    def __init__(self, ranges: list[_Range]) -> None:
        self.ranges = ranges

    def replace(self, old: _Range, pieces: list[_Range]) -> None:
        at = self.ranges.index(old)
        self.ranges[at : at + 1] = pieces

    def first_unfinished(self) -> _Range | None:
        """The first range not read whole (None: all were)."""
        for r in self.ranges:
            if r.status != "complete":
                return r
        return None

    def pending(self) -> list[_Range]:
        """Ranges with requests to send (a crowded microsecond stays pending while its pages come in)."""
        return [r for r in self.ranges if r.status == "pending"]


class TaskCompletionFeed(_FeedSettings):
    """Reads task instances that ended, exactly once, within a time budget (see the module docstring).

    Args:
        source: the Airflow instance.
        late_commit_window, time_budget, parallel, page_size, clock, executor: as for `CompletionFeed` (the
            run feed).
        full_reread_window: the part of the late-commit window read again by content each tick; before it,
            counts. Default: the whole window. Unlike runs, task instances are cleared often (to run a failed
            task again), and a clear and a late commit in one counted slice between two ticks leave its count
            unchanged, so counts alone could miss that late commit.
        max_completions: a tick stops sending new requests once it has read this many new task instances.
    """

    def __init__(
        self,
        source: FinishedTaskInstancesSource,
        *,
        late_commit_window: timedelta = timedelta(minutes=5),
        full_reread_window: timedelta | None = None,
        time_budget: float = 8.0,
        max_completions: int = 20000,
        parallel: int = 4,
        page_size: int = 100,
        clock: Callable[[], float] = time.monotonic,
        executor: Executor | None = None,
    ) -> None:
        if page_size < 2:
            raise ValueError(f"page_size must be >= 2, got {page_size}")
        super().__init__(
            late_commit_window=late_commit_window,
            full_reread_window=late_commit_window if full_reread_window is None else full_reread_window,
            time_budget=time_budget,
            max_completions=max_completions,
            parallel=parallel,
            page_size=page_size,
            clock=clock,
            executor=executor,
        )
        self._source = source

    def poll(
        self,
        state: FeedState,
        dag_ids: Sequence[str] | None = None,
        on_completions: Callable[[Sequence[TaskInstance]], None] | None = None,
    ) -> TaskPollResult:
        """Read on from `state` (not modified); returns the new completions and the next state.

        `dag_ids` limits the read to those DAGs (None: every DAG); it may change between ticks (a DAG that
        gains a mapping): the counts then differ and the window is read again by content, which delivers
        only what was not delivered. An error on the tick's first request is raised (keep the old cursor).
        `on_completions` gets completions as they become final, in end-date order for new ones.
        """
        tick = _TaskTick(self, state.copy(), list(dag_ids) if dag_ids is not None else None, on_completions)
        return tick.run()


class _TaskTick:
    def __init__(
        self,
        feed: TaskCompletionFeed,
        state: FeedState,
        dag_ids: list[str] | None,
        on_completions: Callable[[Sequence[TaskInstance]], None] | None,
    ) -> None:
        self.feed = feed
        self.state = state
        self.dag_ids = dag_ids
        self.on_completions = on_completions
        self.out: list[TaskInstance] = []
        self.requests = 0
        self.pages = 0
        self.new_items = 0
        self.ranges = 0
        self.server_time: datetime | None = None
        self.newest_end: datetime | None = None
        self.page_len = feed._page_size
        self.keys = sorted(state.seen)
        total = 0
        self.cumulative = [0]
        for key in self.keys:
            total += len(state.seen[key]) - state.gone.get(key, 0)
            self.cumulative.append(total)

    # -- what was delivered at the tick's start ------------------------------------------------------------

    def _bound(self, instant: datetime | None) -> int:
        return len(self.keys) if instant is None else bisect_left(self.keys, iso(instant))

    def expected_in(self, lo: datetime, hi: datetime | None) -> int:
        return self.cumulative[self._bound(hi)] - self.cumulative[self._bound(lo)]

    def key_reaching(self, target: float) -> datetime | None:
        index = bisect_left(self.cumulative, target)
        return datetime.fromisoformat(self.keys[index - 1]) if 0 < index <= len(self.keys) else None

    # -- the tick ------------------------------------------------------------------------------------------

    def run(self) -> TaskPollResult:
        state, feed = self.state, self.feed
        watermark, start, recount_to = state.watermark, state.position, state.recount_to
        if self.expected_in(watermark, None) <= _SMALL_WINDOW * feed._page_size:
            start = recount_to = watermark
        counts = self._count_ranges(watermark, recount_to)
        recent = [_Range(recount_to, start, "content")] if start > recount_to else []
        self.verify = _Part([*counts, *recent])
        self.new = _Part(self._new_ranges(start))
        self.ranges = len(self.verify.ranges) + len(self.new.ranges)
        self._read()
        return self._finish(start, recount_to)

    def _count_ranges(self, lo: datetime, hi: datetime) -> list[_Range]:
        if hi <= lo:
            return []
        feed = self.feed
        expected = self.expected_in(lo, hi)
        slices = max(1, min(feed._parallel - 2, expected // (_COUNT_SLICE_PAGES * feed._page_size)))
        points = [lo]
        base = self.cumulative[self._bound(lo)]
        for i in range(1, slices):
            at = self.key_reaching(base + expected * i / slices)
            if at is not None and points[-1] < at < hi and self.expected_in(points[-1], at) > 0:
                points.append(at)
        ends = [*points[1:], hi]
        return [_Range(a, b, "count", self.expected_in(a, b)) for a, b in zip(points, ends, strict=True)]

    def _new_ranges(self, lo: datetime) -> list[_Range]:
        """From where the last tick stopped on; far behind Airflow's clock (a first tick, a stopped sensor)
        the way up to it is cut into `parallel` slices at once."""
        feed = self.feed
        if feed._parallel > 1:
            now = feed._source.server_time()
            behind = _BEHIND + (feed._late if lo <= self.state.watermark else timedelta(0))
            if now is not None and now - lo > behind:
                step = (now - lo) / feed._parallel
                points = [lo + step * i for i in range(feed._parallel)]
                return [
                    *(_Range(a, b, "content") for a, b in zip(points, [*points[1:], now], strict=True)),
                    _Range(now, None, "content"),
                ]
        return [_Range(lo, None, "content")]

    # -- reading -------------------------------------------------------------------------------------------

    def _read(self) -> None:
        feed = self.feed
        executor, own_pool = feed._executor_for_tick()
        started = feed._clock()
        in_flight: dict[Future[TaskInstancesPage], _Request] = {}
        stopping = False
        try:
            while True:
                if not stopping:
                    self._submit(executor, in_flight)
                if not in_flight:
                    return
                done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: (in_flight[f].range.lo, in_flight[f].offset)):
                    request = in_flight.pop(future)
                    request.range.in_flight -= 1
                    try:
                        page = future.result()
                    except AirflowError as exc:
                        if self.pages == 0:
                            raise  # the tick's first request: fail the tick, keep the cursor
                        request.range.status, request.range.error = "failed", exc
                        continue
                    self._note(page)
                    self._accept(request, page)
                over = feed._clock() - started >= feed._budget or self.new_items >= feed._max
                if over and self._moved(self.new) and self._moved(self.verify):
                    stopping = True
                self._deliver()
        finally:
            if own_pool:
                executor.shutdown(wait=True)

    def _moved(self, part: _Part) -> bool:
        """Whether a part's first range was read (a tick never stops before both parts moved)."""
        return not part.ranges or part.ranges[0].status in ("complete", "failed")

    def _submit(self, executor: Executor, in_flight: dict[Future[TaskInstancesPage], _Request]) -> None:
        """Earliest ranges first, the verification before new completions but leaving them a slot."""
        parallel = self.feed._parallel
        new_pending = self.new.pending()
        verify_slots = parallel - 1 if parallel > 1 and new_pending else parallel
        verifying = {id(r) for r in self.verify.ranges}
        used_verify = sum(1 for r in in_flight.values() if id(r.range) in verifying)
        for ranges, is_verify in ((self.verify.pending(), True), (new_pending, False)):
            for r in ranges:
                for request in self._requests_of(r):
                    if len(in_flight) >= parallel:
                        return
                    if is_verify and used_verify >= verify_slots:
                        break
                    if r.dense_pages is not None:
                        r.asked.add(request.offset)
                    else:
                        r.status = "asked"
                    used_verify += is_verify
                    r.in_flight += 1
                    future = executor.submit(contextvars.copy_context().run, self._fetch, request)
                    self.requests += 1
                    in_flight[future] = request

    def _requests_of(self, r: _Range) -> list[_Request]:
        if r.dense_pages is not None:
            step = self.page_len
            total = max(r.dense_totals) if r.dense_totals else step
            return [
                _Request(r, offset, step)
                for offset in range(0, total, step)
                if offset not in r.dense_pages and offset not in r.asked
            ]
        if r.status != "pending":
            return []
        return [_Request(r, 0, 1 if r.kind == "count" else self.feed._page_size)]

    def _fetch(self, request: _Request) -> TaskInstancesPage:
        r = request.range
        return self.feed._source.list_finished_task_instances(
            end_date_gte=r.lo,
            end_date_lte=r.hi - ONE_MICROSECOND if r.hi is not None else None,
            dag_ids=self.dag_ids,
            offset=request.offset,
            limit=request.limit,
            order_by="id" if r.dense_pages is not None else "end_date",
        )

    def _note(self, page: TaskInstancesPage) -> None:
        self.pages += 1
        if self.server_time is None:
            self.server_time = page.server_time
        for ti in page.task_instances:
            if ti.end_date is not None and (self.newest_end is None or ti.end_date > self.newest_end):
                self.newest_end = ti.end_date

    def _accept(self, request: _Request, page: TaskInstancesPage) -> None:
        r = request.range
        if r.done:
            return
        rows = tuple(
            ti
            for ti in page.task_instances
            if ti.end_date is not None and r.lo <= ti.end_date and (r.hi is None or ti.end_date < r.hi)
        )
        if r.kind == "count":
            if page.total_entries == r.expected:
                r.status = "complete"
            else:
                # Something joined or left the range since it was read: read it whole again.
                r.kind, r.status = "content", "pending"
            return
        if r.dense_pages is not None:
            self._accept_dense(r, request, page, rows)
            return
        if len(page.task_instances) > 1:
            self.page_len = min(self.page_len, len(page.task_instances))
        if page.total_entries <= len(page.task_instances):
            self._complete(r, list(rows))
            return
        self._split(r, page, rows)

    def _accept_dense(
        self, r: _Range, request: _Request, page: TaskInstancesPage, rows: tuple[TaskInstance, ...]
    ) -> None:
        assert r.dense_pages is not None
        r.asked.discard(request.offset)
        r.dense_pages[request.offset] = rows
        r.dense_totals.add(page.total_entries)
        total = max(r.dense_totals)
        if r.in_flight or any(o not in r.dense_pages for o in range(0, total, self.page_len)):
            return  # pages still out, or missing (the count grew): `_submit` asks for them
        found = {task_instance_digest(ti): ti for page_rows in r.dense_pages.values() for ti in page_rows}
        if len(r.dense_totals) == 1 and len(found) == total:
            self._complete(r, list(found.values()))
            return
        r.dense_tries += 1
        if r.dense_tries >= _DENSE_TRIES:
            r.status = "failed"
            r.error = AirflowResponseError(
                f"{total} task instances ended at {iso(r.lo)} and Airflow listed them differently on each read "
                f"({len(found)} distinct); the feed stops there and tries again next tick. Raising Airflow's "
                "[api] maximum_page_limit above that number lets one page hold them all."
            )
            return
        r.dense_pages, r.dense_totals = {}, set()

    def _split(self, r: _Range, page: TaskInstancesPage, rows: tuple[TaskInstance, ...]) -> None:
        """Cut a range that holds more than a page into even steps of time, each expected to fill part of a
        page (Airflow 2's rows come in no order, so they are no sample to cut at), and a crowded instant on
        its own. A piece that still holds more is cut again when it answers."""
        total = page.total_entries
        if r.hi is not None and r.hi - r.lo <= ONE_MICROSECOND:
            # A crowded microsecond: read by offset pages (page 0 was read in end-date order, the others
            # by primary key on Airflow 3: it is read again with them if the pages disagree).
            r.dense_pages, r.status = {0: rows}, "pending"
            r.dense_totals.add(total)
            return
        ends = sorted(ti.end_date for ti in rows if ti.end_date is not None)
        top = max([*ends, self.server_time or r.lo, r.lo]) + ONE_MICROSECOND
        hi = r.hi if r.hi is not None else top
        pieces = min(_MAX_PIECES, max(2, math.ceil(total / (_PIECE_FILL * self.page_len))))
        step = (hi - r.lo) / pieces
        cuts = {r.lo + step * i for i in range(1, pieces)}
        # An instant that holds a good part of the rows returned (a burst, a bulk state change) gets a range
        # of its own, so that the rows around it are not cut again and again.
        counts = Counter(ends)
        for end, count in counts.items():
            if count >= 2 and count * total > _PIECE_FILL * self.page_len * len(ends):
                cuts.update((end, end + ONE_MICROSECOND))
        if r.hi is None:
            cuts.add(hi)
        points = sorted(c for c in cuts if r.lo < c < hi or (r.hi is None and c == hi))
        if not points:
            points = [r.lo + ONE_MICROSECOND]
        bounds = [r.lo, *points]
        children = [_Range(a, b, "content") for a, b in zip(bounds, [*bounds[1:], r.hi], strict=True)]
        if self.ranges + len(children) > _MAX_RANGES:
            r.status, r.error = "failed", None  # the next tick reads on from here
            return
        self.ranges += len(children) - 1
        r.status = "split"
        part = self.new if r in self.new.ranges else self.verify
        part.replace(r, children)

    def _complete(self, r: _Range, rows: list[TaskInstance]) -> None:
        r.items, r.status = rows, "complete"
        found: dict[str, set[str]] = {}
        for ti in rows:
            assert ti.end_date is not None
            found.setdefault(iso(ti.end_date), set()).add(task_instance_digest(ti))
        self.state.record_present(r.lo, r.hi, found, self.keys)
        self.new_items += sum(1 for ti in rows if not self._is_seen(ti))

    # -- delivering ----------------------------------------------------------------------------------------

    def _is_seen(self, ti: TaskInstance) -> bool:
        assert ti.end_date is not None
        return task_instance_digest(ti) in self.state.seen.get(iso(ti.end_date), ())

    def _take(self, rows: Sequence[TaskInstance]) -> None:
        batch: list[TaskInstance] = []
        for ti in sorted(rows, key=lambda t: (t.end_date, t.dag_id, t.run_id, t.task_id, t.map_index)):
            assert ti.end_date is not None
            if ti.end_date < self.state.watermark:
                continue
            group = self.state.seen.setdefault(iso(ti.end_date), set())
            digest = task_instance_digest(ti)
            if digest not in group:
                group.add(digest)
                batch.append(ti)
        self.out.extend(batch)
        if batch and self.on_completions is not None:
            self.on_completions(batch)

    def _deliver(self) -> None:
        # Late commits (verification): any range read whole, in any order: they are older than what was
        # delivered already.
        for r in self.verify.ranges:
            if r.status == "complete" and not r.delivered:
                self._take(r.items)
                r.delivered = True
        # New completions: the leading ranges read whole, in order.
        for r in self.new.ranges:
            if r.status != "complete":
                break
            if not r.delivered:
                self._take(r.items)
                r.delivered = True

    # -- the next cursor -----------------------------------------------------------------------------------

    def _finish(self, start: datetime, recount_to: datetime) -> TaskPollResult:
        state, feed = self.state, self.feed
        self._deliver()
        stop = self.new.first_unfinished()
        interrupted: Exception | None = stop.error if stop is not None else None
        # All read: read on from Airflow's clock at the tick's start (later rows were read, and are again).
        position = max(start, self.server_time or self.newest_end or start) if stop is None else stop.lo
        unverified: datetime | None = None
        unread_recent: datetime | None = None
        for r in self.verify.ranges:
            if r.status == "complete":
                continue
            if unverified is None:
                unverified, interrupted = r.lo, interrupted or r.error
            if r.lo >= recount_to:
                unread_recent = r.lo
                break
        settled = self._settled(feed._late)
        recent = self._settled(feed._fresh)
        state.clear_tie()
        state.advance(min(settled, unverified or position, position))
        state.read_to = max(position, state.watermark)
        state.full_from = max(min(recent, position, unread_recent or position), state.watermark)
        return TaskPollResult(
            completions=self.out,
            state=state,
            caught_up=stop is None and unverified is None,
            requests=self.requests,
            pages=self.pages,
            interrupted=interrupted,
        )

    def _settled(self, window: timedelta) -> datetime:
        if self.server_time is not None:
            return self.server_time - window
        if self.newest_end is not None:
            return self.newest_end - window
        return self.state.watermark
