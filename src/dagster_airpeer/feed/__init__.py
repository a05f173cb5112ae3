"""The completion feed: which Airflow DAG runs ended since the last tick, each exactly once.

This is the heart of the sensor and is kept free of Dagster so it can be reasoned about and tested alone.
Its state (`FeedState`) is what the sensor stores as its cursor. docs/cursor.md has the whole argument:

* One query shape: runs in a terminal state with ``end_date`` in a range, ordered by ``end_date``
  (``POST /dags/~/dagRuns/list`` on Airflow 2 and 3). Cost grows with the runs that ended, never with DAGs.
* **Keyset paging, or offset pages that must overlap**, so a run inserted, cleared or deleted between two
  pages cannot make us skip one; a run read twice is recognised in ``seen``.
* **Concurrent pages.** After its first page a tick knows how many runs are left; it cuts the rest of the
  range into disjoint slices of about a page each and reads them at once, or, when the range has an end and
  the rest fits in a few pages, reads that rest by primary key, all its pages at once. Primary-key pages
  (these, and groups of runs sharing one end date) overlap by one run which must match.
* **Late commits.** Airflow writes ``end_date`` before its transaction commits. The watermark only advances
  to Airflow's clock (HTTP ``Date``) at the tick's start minus ``late_commit_window``; what lies after it and
  was read already is checked each tick: the runs that ended within ``full_reread_window`` are read again
  (de-duplicated by ``seen``), the older ones are counted per slice, and only a slice whose count changed is
  read again. New runs are read from where the keyset stopped, never held back by that check.
* **Task instances** (tasks.py, the observe stage) have their own feed on the same state: Airflow 2 lists
  them in no order, so it reads time ranges that fit one page instead of paging.
* **Bounded ticks.** A tick stops sending requests when its time budget or run cap is reached and keeps the
  longest prefix it read completely; everything before the cursor was delivered, nothing after it.
"""

from .poll import CompletionFeed, FinishedRunsSource, InlineExecutor, PollResult
from .state import CURSOR_VERSION, CursorError, FeedState, completion_digest, load_cursor_json
from .tasks import FinishedTaskInstancesSource, TaskCompletionFeed, TaskPollResult, task_instance_digest

__all__ = [
    "CURSOR_VERSION",
    "CompletionFeed",
    "CursorError",
    "FeedState",
    "FinishedRunsSource",
    "FinishedTaskInstancesSource",
    "InlineExecutor",
    "PollResult",
    "TaskCompletionFeed",
    "TaskPollResult",
    "completion_digest",
    "load_cursor_json",
    "task_instance_digest",
]
