"""Loaded by the dagster-daemon of the crash test only (its PYTHONPATH starts here).

When AIRPEER_CRASH_MARKER names a file that does not exist yet, the first runless asset event the daemon
stores is followed by writing that file and a long sleep: the test then kills the daemon with SIGKILL,
after some of a tick's events were stored and before its cursor was.
"""

import os
import time
from pathlib import Path

_marker = os.environ.get("AIRPEER_CRASH_MARKER")

if _marker and not Path(_marker).exists():
    from dagster._core.instance import DagsterInstance

    _original = DagsterInstance.report_runless_asset_event

    def _report_then_hang(self, asset_event, *args, **kwargs):  # type: ignore[no-untyped-def]
        result = _original(self, asset_event, *args, **kwargs)
        if not Path(_marker).exists():
            Path(_marker).write_text(str(os.getpid()))
            time.sleep(120)
        return result

    DagsterInstance.report_runless_asset_event = _report_then_hang  # type: ignore[method-assign]
