"""The completion feed: which Airflow DAG runs ended since the last tick, each exactly once.

This is the heart of the sensor and is kept free of Dagster so it can be reasoned about and tested alone.
Its state (`FeedState`) is what the sensor stores as its cursor.

Design (see docs/cursor.md for the full argument):

* One query shape only: runs in a terminal state with ``end_date >= position``, ordered by ``end_date``
  (``POST /dags/~/dagRuns/list`` exists on Airflow 2 and 3). Cost is therefore proportional to the runs that
  ended, never to the number of DAGs.
* **Keyset paging, not offset paging.** After a page whose last run ended at ``t`` the next query starts at
  ``end_date >= t``. A run that is inserted, cleared or deleted between two pages cannot shift a later page
  and make us skip an item, which offset paging would. Runs at exactly ``t`` come back again and are
  recognised by ``seen``.
* **Ties.** When a whole page shares one end date, keyset paging cannot move forward; the feed then pages
  through that single instant with ``end_date == t`` ordered by the run's primary key (stable on both
  versions; Airflow 2 has no tiebreaker of its own) and resumes with a safety margin after a time budget stop.
* **Late commits.** Airflow writes ``end_date`` before its transaction commits, so a run can become visible
  with an end date older than runs already read. The feed never trusts the newest end date it read; its
  watermark only advances to ``Airflow's clock at the start of the tick - late_commit_window``. Everything at
  or after the watermark is re-read each tick and de-duplicated by ``seen``; everything before it was read
  while already committed. The watermark uses Airflow's clock (HTTP Date header), so skew between Airflow and
  Dagster does not matter.
* **Exactly once.** A completion is identified by (dag_id, run_id, end_date): a run cleared and run again ends
  at another time and is a new completion. ``seen`` holds a short digest of every completion delivered at or
  after the watermark, grouped by end date, and is pruned as the watermark advances, so the cursor stays small.
* **Bounded ticks.** A tick stops between pages when its time budget or its event cap is reached and records
  where it stopped; everything before that point was delivered, nothing after it was.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, Protocol

from .airflow.errors import AirflowError, AirflowResponseError
from .airflow.models import DagRun, RunsPage

_ONE_MICROSECOND = timedelta(microseconds=1)
CURSOR_VERSION = 1
_TIE_RESUME_MARGIN = 100


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


class CursorError(ValueError):
    """The stored cursor cannot be read (written by an incompatible version or edited by hand)."""


def completion_digest(dag_id: str, run_id: str) -> str:
    """A short, stable identity of a run (its end date is the group it is stored under)."""
    raw = hashlib.blake2b(f"{dag_id}\x1f{run_id}".encode(), digest_size=9).digest()
    return base64.urlsafe_b64encode(raw).decode("ascii")


def _iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _parse(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise CursorError(f"cursor timestamp {value!r} has no timezone")
    return parsed


@dataclass
class FeedState:
    """The sensor cursor: a watermark and the completions delivered at or after it."""

    #: Every completion that ended before this instant was delivered (or predates the first lookback).
    watermark: datetime
    #: ISO end date -> digests of completions delivered with that end date (all >= watermark).
    seen: dict[str, set[str]] = field(default_factory=dict)
    #: When a tick stopped inside a group of runs sharing one end date: that end date and how far it got.
    tie_at: datetime | None = None
    tie_offset: int = 0

    @classmethod
    def initial(cls, now: datetime, lookback: timedelta) -> FeedState:
        return cls(watermark=now - lookback)

    def is_seen(self, run: DagRun) -> bool:
        assert run.end_date is not None
        group = self.seen.get(_iso(run.end_date))
        return group is not None and completion_digest(run.dag_id, run.run_id) in group

    def mark_seen(self, run: DagRun) -> None:
        assert run.end_date is not None
        self.seen.setdefault(_iso(run.end_date), set()).add(completion_digest(run.dag_id, run.run_id))

    def advance(self, watermark: datetime) -> None:
        """Move the watermark forward (never back) and forget what is now below it."""
        if watermark <= self.watermark:
            return
        self.watermark = watermark
        cut = _iso(watermark)
        # ISO strings of UTC datetimes with fixed precision sort like the datetimes themselves.
        self.seen = {k: v for k, v in self.seen.items() if k >= cut}
        if self.tie_at is not None and self.tie_at < watermark:
            self.tie_at, self.tie_offset = None, 0

    @property
    def seen_count(self) -> int:
        return sum(len(v) for v in self.seen.values())

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "v": CURSOR_VERSION,
            "watermark": _iso(self.watermark),
            "seen": {k: sorted(v) for k, v in sorted(self.seen.items())},
        }
        if self.tie_at is not None:
            doc["tie"] = [_iso(self.tie_at), self.tie_offset]
        return doc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, doc: Any) -> FeedState:
        try:
            if not isinstance(doc, dict) or doc.get("v") != CURSOR_VERSION:
                version = doc.get("v") if isinstance(doc, dict) else doc
                raise CursorError(f"unsupported cursor version {version!r}")
            state = cls(
                watermark=_parse(doc["watermark"]),
                seen={str(k): {str(d) for d in v} for k, v in doc.get("seen", {}).items()},
            )
            tie = doc.get("tie")
            if tie:
                state.tie_at, state.tie_offset = _parse(tie[0]), int(tie[1])
            return state
        except CursorError:
            raise
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise CursorError(f"the sensor cursor is not an airpeer cursor: {exc!r}") from exc

    @classmethod
    def from_json(cls, text: str) -> FeedState:
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise CursorError(f"the sensor cursor is not JSON: {exc}") from exc
        return cls.from_dict(doc)


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


class CompletionFeed:
    """Reads new completions from Airflow, exactly once, within a time budget.

    Args:
        source: the Airflow instance.
        late_commit_window: how long after its end date a run may still become visible (commit delay plus
            clock skew between Airflow's own hosts). Runs that ended within this window before Airflow's
            current time are re-read each tick.
        time_budget: seconds after which a tick stops between two pages.
        max_completions: a tick stops between pages once it has found this many completions.
        clock: monotonic clock, for tests.
    """

    def __init__(
        self,
        source: FinishedRunsSource,
        *,
        late_commit_window: timedelta = timedelta(minutes=5),
        time_budget: float = 8.0,
        max_completions: int = 5000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if late_commit_window < timedelta(0):
            raise ValueError("late_commit_window must not be negative")
        self._source = source
        self._late = late_commit_window
        self._budget = time_budget
        self._max = max_completions
        self._clock = clock

    def poll(self, state: FeedState) -> PollResult:
        """Read from `state`'s position; returns new completions in end-date order and the next state.

        `state` is not modified; on an exception nothing is delivered and the caller keeps its old cursor.
        """
        state = FeedState(
            watermark=state.watermark,
            seen={k: set(v) for k, v in state.seen.items()},
            tie_at=state.tie_at,
            tie_offset=state.tie_offset,
        )
        started = self._clock()
        out: list[DagRun] = []
        requests = pages = 0
        tick_start_server_time: datetime | None = None
        newest_end: datetime | None = None
        position = state.watermark
        caught_up = False
        tie_at_start, tie_offset_at_start = state.tie_at, state.tie_offset

        def settled_bound(server_time: datetime | None, newest: datetime | None) -> datetime:
            if server_time is not None:
                return server_time - self._late
            if newest is not None:
                # No Date header: Airflow's own newest end date is never ahead of its clock.
                return newest - self._late
            return state.watermark

        def take(page: RunsPage) -> None:
            nonlocal newest_end
            for run in page.runs:
                if run.end_date is None or run.end_date < state.watermark:
                    # Not a completion for us: the filter excludes both; a server ignoring it must not
                    # make us deliver a run twice.
                    continue
                if not state.is_seen(run):
                    state.mark_seen(run)
                    out.append(run)
                if newest_end is None or run.end_date > newest_end:
                    newest_end = run.end_date

        interrupted: Exception | None = None
        while True:
            try:
                if state.tie_at is not None:
                    tie_at = state.tie_at
                    page = self._source.list_finished_runs(
                        end_date_gte=tie_at, end_date_lte=tie_at, order_by="id", offset=state.tie_offset
                    )
                else:
                    page = self._source.list_finished_runs(end_date_gte=position, order_by="end_date")
            except AirflowError as exc:
                if pages == 0:
                    raise
                # Keep what earlier pages delivered; the cursor stops at the last page fully read.
                interrupted = exc
                break
            requests += 1
            pages += 1
            if tick_start_server_time is None:
                tick_start_server_time = page.server_time
            take(page)

            if state.tie_at is not None:
                state.tie_offset += len(page.runs)
                if not page.runs or state.tie_offset >= page.total_entries:
                    # The whole instant is read; continue just after it.
                    position = state.tie_at + _ONE_MICROSECOND
                    state.tie_at, state.tie_offset = None, 0
            else:
                if len(page.runs) >= page.total_entries:
                    caught_up = True
                    break
                # The filter excludes runs without an end date; should one slip in, page by the others.
                ends = [run.end_date for run in page.runs if run.end_date is not None]
                if not ends:
                    # Nothing to page by: stop here without moving past `position`, and say why.
                    interrupted = AirflowResponseError(
                        "Airflow answered a page of finished runs none of which has an end date; "
                        "the sensor will read it again at the next tick"
                    )
                    break
                first_end, last_end = min(ends), max(ends)
                if last_end <= position or first_end == last_end:
                    # A full page of one instant: page through it by primary key.
                    state.tie_at, state.tie_offset = last_end, 0
                    position = last_end
                else:
                    position = last_end

            # A tick may stop inside a group of tied runs only once that instant is settled: resuming at
            # the group skips re-reading what lies before it, which is safe only where no late commit can
            # land. A recent group is finished first (the instance's hard deadline still bounds it).
            may_stop = state.tie_at is None or state.tie_at <= settled_bound(
                tick_start_server_time, newest_end
            )
            if may_stop and (self._clock() - started >= self._budget or len(out) >= self._max):
                break

        # Where the watermark may go: never past what was read (position), and never closer to Airflow's
        # present than the late-commit window.
        settled = settled_bound(tick_start_server_time, newest_end)
        if interrupted is not None and state.tie_at is not None and state.tie_at > settled:
            # Cut off inside a recent tie group: start over from the watermark next time.
            state.tie_at, state.tie_offset = None, 0
        if caught_up:
            new_watermark = settled
        elif state.tie_at is not None:
            new_watermark = min(settled, state.tie_at)
            # Resume a little before where we stopped: runs deleted meanwhile shift the offsets down, and
            # the margin is re-read (and de-duplicated by `seen`) rather than skipped. The margin is at most
            # half of what this tick advanced, so every tick still moves forward.
            same_group = state.tie_at == tie_at_start
            advanced = state.tie_offset - (tie_offset_at_start if same_group else 0)
            state.tie_offset -= min(_TIE_RESUME_MARGIN, advanced // 2)
        else:
            new_watermark = min(settled, position)
        state.advance(new_watermark)
        return PollResult(
            completions=out,
            state=state,
            caught_up=caught_up,
            requests=requests,
            pages=pages,
            interrupted=interrupted,
        )
