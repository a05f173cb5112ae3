"""The feed's position, stored as the sensor cursor: a watermark, how far the keyset read, and the completions
delivered at or after the watermark."""

from __future__ import annotations

import base64
import hashlib
import json
from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from ..airflow.models import DagRun

CURSOR_VERSION = 1


class CursorError(ValueError):
    """The stored cursor cannot be read (written by an incompatible version or edited by hand)."""


def completion_digest(dag_id: str, run_id: str) -> str:
    """A short, stable identity of a run (its end date is the group it is stored under)."""
    raw = hashlib.blake2b(f"{dag_id}\x1f{run_id}".encode(), digest_size=9).digest()
    return base64.urlsafe_b64encode(raw).decode("ascii")


def run_digest(run: DagRun) -> str:
    return completion_digest(run.dag_id, run.run_id)


def iso(value: datetime) -> str:
    """Fixed-precision UTC ISO text: these strings sort like the datetimes they stand for."""
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
    #: When a tick stopped inside a group of runs sharing one end date (read in primary-key order): that end
    #: date, how many runs of the group were read, and the digest of the last one (where reading resumes).
    tie_at: datetime | None = None
    tie_offset: int = 0
    tie_anchor: str | None = None
    #: The keyset read everything visible with an end date before this instant (None: the watermark). The
    #: next tick reads new runs from here.
    read_to: datetime | None = None
    #: Runs ending in [watermark, full_from) were all read by content once they were settled for
    #: `full_reread_window`; the next tick checks that part by counts. From here to `read_to` it re-reads by
    #: content (None: the watermark).
    full_from: datetime | None = None
    #: ISO end date -> how many of the completions in `seen` at that instant were missing when it was last read
    #: whole (deleted or cleared in Airflow since): a count of that instant expects that many fewer runs.
    gone: dict[str, int] = field(default_factory=dict)

    @classmethod
    def initial(cls, now: datetime, lookback: timedelta) -> FeedState:
        return cls(watermark=now - lookback)

    def copy(self) -> FeedState:
        return FeedState(
            watermark=self.watermark,
            seen={k: set(v) for k, v in self.seen.items()},
            tie_at=self.tie_at,
            tie_offset=self.tie_offset,
            tie_anchor=self.tie_anchor,
            read_to=self.read_to,
            full_from=self.full_from,
            gone=dict(self.gone),
        )

    @property
    def position(self) -> datetime:
        """Where the keyset reads on: never before the watermark."""
        return max(self.read_to, self.watermark) if self.read_to is not None else self.watermark

    @property
    def recount_to(self) -> datetime:
        """The end (exclusive) of the part after the watermark that the next tick checks by counts."""
        full_from = self.full_from if self.full_from is not None else self.watermark
        return min(max(full_from, self.watermark), self.position)

    def expected_at(self, instant: datetime) -> int:
        """How many runs end at `instant` in Airflow if nothing changed since they were read."""
        key = iso(instant)
        return len(self.seen.get(key, ())) - self.gone.get(key, 0)

    def record_present(
        self, lo: datetime, hi: datetime | None, found: dict[str, set[str]], keys: list[str]
    ) -> None:
        """A read of every run with ``lo <= end_date < hi`` (None: no end) found these digests per ISO end date.

        `keys` are the sorted end dates of `seen` at the tick's start (an end date first seen since came from
        this tick's reads, so nothing of it can be missing). Each one in the range gets how many of its
        delivered completions the read did not find.
        """
        start = bisect_left(keys, iso(lo))
        stop = len(keys) if hi is None else bisect_left(keys, iso(hi))
        for key in keys[start:stop]:
            missing = len(self.seen.get(key, set()) - found.get(key, set()))
            if missing:
                self.gone[key] = missing
            else:
                self.gone.pop(key, None)

    def is_seen(self, run: DagRun) -> bool:
        assert run.end_date is not None
        group = self.seen.get(iso(run.end_date))
        return group is not None and run_digest(run) in group

    def mark_seen(self, run: DagRun) -> bool:
        """Record a delivered completion; False if it was recorded already."""
        assert run.end_date is not None
        group = self.seen.setdefault(iso(run.end_date), set())
        digest = run_digest(run)
        if digest in group:
            return False
        group.add(digest)
        return True

    def seen_at(self, instant: datetime) -> int:
        """How many completions ending exactly at `instant` were delivered."""
        return len(self.seen.get(iso(instant), ()))

    def stop_in_tie(self, at: datetime, offset: int, anchor: str | None) -> None:
        self.tie_at, self.tie_offset, self.tie_anchor = at, offset, anchor

    def clear_tie(self) -> None:
        self.tie_at, self.tie_offset, self.tie_anchor = None, 0, None

    def advance(self, watermark: datetime) -> None:
        """Move the watermark forward (never back) and forget what is now below it."""
        if watermark <= self.watermark:
            return
        self.watermark = watermark
        cut = iso(watermark)
        self.seen = {k: v for k, v in self.seen.items() if k >= cut}
        self.gone = {k: v for k, v in self.gone.items() if k >= cut}
        if self.tie_at is not None and self.tie_at < watermark:
            self.clear_tie()

    @property
    def seen_count(self) -> int:
        return sum(len(v) for v in self.seen.values())

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "v": CURSOR_VERSION,
            "watermark": iso(self.watermark),
            "seen": {k: sorted(v) for k, v in sorted(self.seen.items())},
        }
        if self.tie_at is not None:
            doc["tie"] = [iso(self.tie_at), self.tie_offset, self.tie_anchor]
        # Keys a cursor of version 1 may lack (older airpeer reads from the watermark, ignoring them).
        if self.read_to is not None:
            doc["read_to"] = iso(self.read_to)
        if self.full_from is not None:
            doc["full_from"] = iso(self.full_from)
        if self.gone:
            doc["gone"] = dict(sorted(self.gone.items()))
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
                anchor = str(tie[2]) if len(tie) > 2 and tie[2] is not None else None
                # A cursor written before anchors were kept: the group is read again from its start (its
                # runs are recognised in `seen`), since an offset alone cannot be checked.
                offset = int(tie[1]) if anchor is not None else 0
                state.stop_in_tie(_parse(tie[0]), offset, anchor)
            # Written before counts: everything from the watermark on is read again by content.
            if doc.get("read_to") is not None:
                state.read_to = _parse(doc["read_to"])
            if doc.get("full_from") is not None:
                state.full_from = _parse(doc["full_from"])
            state.gone = {str(k): int(v) for k, v in doc.get("gone", {}).items() if int(v) > 0}
            return state
        except CursorError:
            raise
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise CursorError(f"the sensor cursor is not an airpeer cursor: {exc!r}") from exc

    @classmethod
    def from_json(cls, text: str) -> FeedState:
        return cls.from_dict(load_cursor_json(text))


def load_cursor_json(text: str) -> Any:
    """The stored cursor's JSON document; CursorError when it is not JSON."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CursorError(f"the sensor cursor is not JSON: {exc}") from exc
