"""HTTP faults on any page of the runs list: the tick ends cleanly, the cursor stays consistent, and the ticks
that follow deliver every completion exactly once.

Served by the in-memory Airflow (`reliability.fake_airflow`) behind `reliability.faults.FaultTransport`:
a real server cannot be made to answer 502 or cut its JSON on the third page. 60 finished runs, 15 of them
sharing one end date, read 10 per page: page 1 is the first request of a tick (whose failure fails the tick),
page 4 is inside the paging of the tie group (whose failure interrupts a tick that already delivered).

Transient faults (one attempt) are absorbed by the retries; persistent ones (every attempt of a request, 4
with the default 3 retries) fail the request: a failed first page fails the tick with the cursor untouched,
a failed later page delivers what was read before it and the next tick resumes.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest

from dagster_airpeer import AirflowConnectionError, AirflowError, AirflowResponseError
from dagster_airpeer.feed import FeedState
from reliability.fake_airflow import FakeAirflow
from reliability.faults import Fault, FaultTransport
from reliability.harness import Peered, drain, peer_fake
from reliability.ledger import compare, recorded_events
from reliability.ticker import Ticker

RETRIES = 3

FAULTS = {
    "500": Fault("status", status=500),
    "502": Fault("status", status=502),
    "503": Fault("status", status=503),
    "504": Fault("status", status=504),
    "429-seconds": Fault("status", status=429, retry_after="7"),
    "429-http-date": Fault("status", status=429, retry_after="Wed, 21 Oct 2015 07:28:00 GMT"),
    "connection-reset": Fault("reset"),
    "server-disconnect": Fault("disconnect"),
    "connection-refused": Fault("refused"),
    "read-timeout": Fault("read_timeout"),
    "cut-mid-json": Fault("truncate"),
}


def _with_times(fault: Fault, times: int) -> Fault:
    return Fault(fault.kind, status=fault.status, retry_after=fault.retry_after, times=times)


def _peer(fake: FakeAirflow, tmp_path: Path, transport: FaultTransport) -> Peered:
    # One request at a time: a fault is injected into the Nth request, which is then the Nth page in order.
    # (tests/feed/test_feed.py covers faults among concurrent pages.)
    return peer_fake(
        fake,
        tmp_path / "snap",
        transport=transport,
        page_size=10,
        max_retries=RETRIES,
        max_parallel_requests=1,
    )


def _run(
    fake: FakeAirflow, tmp_path: Path, instance: dg.DagsterInstance, faults: dict[int, Fault]
) -> tuple[Ticker, FaultTransport, list[float], list]:  # type: ignore[type-arg]
    transport = FaultTransport(fake.transport(), faults)
    peered = _peer(fake, tmp_path, transport)
    defs = peered.build()
    ticker = Ticker(instance, peered.sensor)
    outcomes = drain(ticker, defs)
    return ticker, transport, peered.sleeps, outcomes


def _assert_exactly_once(fake: FakeAirflow, instance: dg.DagsterInstance) -> None:
    verdict = compare(fake.completions(), recorded_events(instance))
    assert verdict.ok, verdict.summary()
    assert verdict.completions == 60


@pytest.mark.parametrize("page", [1, 4], ids=["first-page", "tie-page"])
@pytest.mark.parametrize("name", list(FAULTS))
def test_transient_fault_is_retried_within_the_tick(
    name: str, page: int, fake: FakeAirflow, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    _ticker, transport, sleeps, outcomes = _run(fake, tmp_path, dagster_instance, {page: FAULTS[name]})
    assert transport.injected == [(page, FAULTS[name].describe())]
    assert not any(o.failed for o in outcomes), [o.error for o in outcomes]
    assert outcomes[0].events > 0
    _assert_exactly_once(fake, dagster_instance)
    # One retry, and it waited what the server asked when it said (capped at 30 s, an HTTP date in the
    # past means "now").
    assert len(sleeps) == 1
    if name == "429-seconds":
        assert sleeps == [7.0]
    elif name == "429-http-date":
        assert sleeps == [0.0]


@pytest.mark.parametrize("name", list(FAULTS))
def test_persistent_fault_on_the_first_page_fails_the_tick_and_keeps_the_cursor(
    name: str, fake: FakeAirflow, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    # A first tick reads everything; then new runs end and the next tick's first page keeps failing.
    transport = FaultTransport(fake.transport(), {})
    peered = _peer(fake, tmp_path, transport)
    defs = peered.build()
    ticker = Ticker(dagster_instance, peered.sensor)
    drain(ticker, defs)
    for i in range(12):
        fake.add_run("beta", f"late_{i}", datetime.now(timezone.utc) - timedelta(seconds=30 - i))
    before = ticker.cursor
    transport.faults = {transport.seen + 1: _with_times(FAULTS[name], RETRIES + 1)}
    peered.sleeps.clear()
    outcome = ticker.tick(defs, raise_errors=False)

    assert outcome.failed and ticker.cursor == before
    error = outcome.error
    assert isinstance(error, AirflowError)
    expected = AirflowResponseError if name == "cut-mid-json" else AirflowConnectionError
    assert isinstance(error, expected), repr(error)
    assert "'peered'" in str(error) and "dagRuns/list" in str(error)
    assert f"{RETRIES + 1} attempt(s)" in str(error)
    # No retry storm: exactly the configured retries, no more.
    assert len(peered.sleeps) == RETRIES
    # The fault is gone: the next ticks deliver everything, once.
    drain(ticker, defs)
    verdict = compare(fake.completions(), recorded_events(dagster_instance))
    assert verdict.ok and verdict.completions == 72, verdict.summary()


@pytest.mark.parametrize("page", [3, 4], ids=["plain-page", "tie-page"])
@pytest.mark.parametrize("name", list(FAULTS))
def test_persistent_fault_on_a_later_page_delivers_what_was_read_and_resumes(
    name: str, page: int, fake: FakeAirflow, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    ticker, transport, _sleeps, outcomes = _run(
        fake, tmp_path, dagster_instance, {page: _with_times(FAULTS[name], RETRIES + 1)}
    )
    first = outcomes[0]
    # The interrupted tick is not a failed tick: it delivered the pages before the failing one.
    assert not first.failed
    assert first.events > 0
    assert len(transport.injected) == RETRIES + 1
    assert not any(o.failed for o in outcomes)
    assert ticker.cursor is not None
    FeedState.from_json(ticker.cursor)
    _assert_exactly_once(fake, dagster_instance)


def test_every_page_failing_once_in_turn_still_delivers_exactly_once(
    fake: FakeAirflow, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    """Every second request of the runs list fails with a different fault, for the whole drain."""
    kinds = list(FAULTS.values())
    faults = {n: kinds[(n // 2) % len(kinds)] for n in range(1, 200, 2)}
    _ticker, transport, _sleeps, outcomes = _run(fake, tmp_path, dagster_instance, faults)
    assert len(transport.injected) >= 5
    assert not any(o.failed for o in outcomes)
    _assert_exactly_once(fake, dagster_instance)
