"""Evaluate the airpeer sensor and store its results the way Dagster's sensor daemon does.

The daemon (dagster/_daemon/sensor.py, 1.13) evaluates the sensor, then stores each asset event with
`report_runless_asset_event`, one after the other, then (for ticks with run requests) reserves the runs
with the new cursor in the tick record, submits them, and finally writes the cursor into the sensor's state.
A tick that raises is a failed tick: nothing is stored and the cursor stays. `Ticker` does the same, and
can also stop after storing some events and before the cursor, which is what a daemon killed at that moment
leaves behind.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import dagster as dg


@dataclass
class TickOutcome:
    """What one tick did: its events, run requests and cursor, or the error that failed it."""

    events: int = 0
    run_requests: list[dg.RunRequest] = field(default_factory=list)
    error: BaseException | None = None
    cursor_stored: bool = False

    @property
    def failed(self) -> bool:
        return self.error is not None


class Ticker:
    """Ticks one sensor against a Dagster instance, keeping its cursor between ticks as the daemon does."""

    def __init__(self, instance: dg.DagsterInstance, sensor_name: str, cursor: str | None = None) -> None:
        self.instance = instance
        self.sensor_name = sensor_name
        self.cursor = cursor
        self.run_keys: list[str] = []
        self.ticks = 0
        self.failed_ticks = 0

    def evaluate(self, defs: dg.Definitions) -> dg.SensorResult:
        """Run the sensor function once from the stored cursor (nothing stored)."""
        with warnings.catch_warnings():
            # Dagster 1.11+ warns that get_sensor_def no longer resolves resources; the sensor uses none.
            warnings.simplefilter("ignore", UserWarning)
            sensor = defs.get_sensor_def(self.sensor_name)
        context = dg.build_sensor_context(instance=self.instance, cursor=self.cursor, definitions=defs)
        result = sensor(context)
        assert isinstance(result, dg.SensorResult), f"the sensor returned {type(result).__name__}"
        return result

    def tick(
        self, defs: dg.Definitions, *, crash_after_events: int | None = None, raise_errors: bool = True
    ) -> TickOutcome:
        """One tick. With `crash_after_events=k`, store only the first k events and not the cursor.

        A failing evaluation re-raises when `raise_errors` (the default), else it is returned in the outcome,
        as the daemon records a failed tick and carries on.
        """
        self.ticks += 1
        try:
            result = self.evaluate(defs)
        except Exception as exc:
            self.failed_ticks += 1
            if raise_errors:
                raise
            return TickOutcome(error=exc)
        events = list(result.asset_events or [])
        if crash_after_events is not None:
            for event in events[:crash_after_events]:
                self.instance.report_runless_asset_event(event)
            return TickOutcome(events=min(crash_after_events, len(events)), cursor_stored=False)
        for event in events:
            self.instance.report_runless_asset_event(event)
        requests = list(result.run_requests or [])
        for request in requests:
            # The daemon launches a run once per run key; a repeated key is skipped.
            if request.run_key is not None and request.run_key not in self.run_keys:
                self.run_keys.append(request.run_key)
        self.cursor = result.cursor
        return TickOutcome(events=len(events), run_requests=requests, cursor_stored=True)


__all__ = ["TickOutcome", "Ticker"]
