"""Task lists for the snapshot: only for DAGs that have task mappings, one request per DAG, concurrently."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor

from ..airflow.errors import AirflowNotFoundError
from ..airflow.instance import AirflowInstance
from ..airflow.models import Dag, Task

TaskLists = dict[str, tuple[Task, ...]]


def fetch_task_lists(instance: AirflowInstance, dag_ids: Sequence[str], *, max_workers: int = 8) -> TaskLists:
    """``{dag_id: tasks}`` with one `list_tasks` request per DAG, up to ``max_workers`` at once.

    A DAG that Airflow no longer knows (deleted between the DAG listing and this request) is left out: the
    mapping check then reports it, instead of one vanished DAG failing the whole load.
    """
    if not dag_ids:
        return {}
    instance.api_version  # noqa: B018 - detect the version once here rather than racing in the workers

    def one(dag_id: str) -> tuple[Task, ...] | None:
        try:
            return tuple(instance.list_tasks(dag_id))
        except AirflowNotFoundError:
            return None

    workers = max(1, min(max_workers, len(dag_ids)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="airpeer-tasks") as pool:
        # A copy of our context per request, so a deadline() around the load holds in the workers too.
        futures = [(d, pool.submit(contextvars.copy_context().run, one, d)) for d in dag_ids]
        found = {d: future.result() for d, future in futures}
    return {d: tasks for d, tasks in found.items() if tasks is not None}


def task_lists_for(
    instance: AirflowInstance, dag_ids: Collection[str]
) -> Callable[[Sequence[Dag]], TaskLists]:
    """The snapshot's ``tasks_for`` hook: the task lists of the listed DAGs among ``dag_ids``."""
    wanted = frozenset(dag_ids)

    def tasks_for(dags: Sequence[Dag]) -> TaskLists:
        return fetch_task_lists(instance, sorted(d.dag_id for d in dags if d.dag_id in wanted))

    return tasks_for
