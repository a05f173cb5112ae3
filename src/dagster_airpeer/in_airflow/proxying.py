"""`proxying_to_dagster`: mark the proxied tasks of the DAGs of one DAG file, at parse time.

Airflow parses the DAG file both where it schedules (dag processor) and where the task runs (worker), so the
change made here is in place when the task executes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ._airflow import DAG, is_plain_operator
from .naming import PROXIED_OPERATOR_SUFFIX
from .operator import DagsterProxyOperator
from .proxied_state import DagProxiedFile, ProxiedState

log = logging.getLogger(__name__)

# (proxy class, original class) -> their combined class: one per pair, so that every task of one original
# class shares it (and copies of the operator, which Airflow makes before running it, keep it).
_COMBINED: dict[tuple[type[Any], type[Any]], type[Any]] = {}


def _combined_class(operator_class: type[DagsterProxyOperator], original: type[Any]) -> type[Any]:
    key = (operator_class, original)
    combined = _COMBINED.get(key)
    if combined is None:
        combined = type(
            f"{original.__name__}{PROXIED_OPERATOR_SUFFIX}",
            (operator_class, original),
            {"__module__": operator_class.__module__, "__doc__": original.__doc__},
        )
        _COMBINED[key] = combined
    return combined


def _dags_in(global_vars: Mapping[str, Any]) -> list[Any]:
    dags: dict[int, Any] = {id(v): v for v in global_vars.values() if isinstance(v, DAG)}
    # A DAG made by a `@dag` function called without assigning its result, or in a `with DAG(...)` block
    # without `as`, is in no global: Airflow registers it with the module it was made in.
    try:
        from airflow.sdk.definitions._internal.contextmanager import DagContext
    except ImportError:  # Airflow 2
        from airflow.models.dag import DagContext  # type: ignore[attr-defined,no-redef,unused-ignore]
    for dag, module in list(getattr(DagContext, "autoregistered_dags", ())):
        if getattr(module, "__dict__", None) is global_vars:
            dags.setdefault(id(dag), dag)
    return list(dags.values())


def _check(dag: Any, state: DagProxiedFile) -> None:
    for entry in state.state.tasks:
        if entry.id not in dag.task_dict:
            known = ", ".join(sorted(dag.task_dict)) or "none"
            raise state.error(
                entry.id, f"task {entry.id!r} is not in DAG {dag.dag_id!r} (its tasks: {known})"
            )


def proxying_to_dagster(
    *,
    global_vars: Mapping[str, Any],
    proxied_state: ProxiedState,
    operator_class: type[DagsterProxyOperator] = DagsterProxyOperator,
    logger: logging.Logger | None = None,
) -> None:
    """Make the proxied tasks of this DAG file's DAGs run in Dagster; call it at the end of the DAG file.

    `global_vars` is the DAG file's `globals()`; `proxied_state` comes from `load_proxied_state_from_yaml`.
    Each proxied task keeps its operator object (dependencies, task group, retries, pool, trigger rule,
    callbacks) and gets `operator_class`'s `execute` and `on_kill`. Raises `ProxiedStateError` (file:line)
    for a YAML task that is not in its DAG and for a proxied mapped (`.expand`) task.
    """
    logger = logger or log
    for dag in _dags_in(global_vars):
        state = proxied_state.for_dag(dag.dag_id)
        if state is None:
            continue
        _check(dag, state)
        proxied = []
        for task_id, task in dag.task_dict.items():
            if not state.is_task_proxied(task_id) or isinstance(task, operator_class):
                continue
            if not is_plain_operator(task):
                raise state.error(
                    task_id if state.state.proxied is None else None,
                    f"task {task_id!r} of DAG {dag.dag_id!r} is a mapped (.expand) task: it cannot be proxied "
                    "to Dagster (one Dagster run per Airflow task is what the proxy does); set it `proxied: false`"
                    + (", listing the DAG's tasks instead of `proxied: true`" if state.state.proxied else ""),
                )
            if isinstance(task, DagsterProxyOperator):
                # Already proxied by another operator class (the file called this twice): leave it.
                continue
            task.__class__ = _combined_class(operator_class, type(task))
            proxied.append(task_id)
        if proxied:
            logger.debug("DAG %s: tasks proxied to Dagster: %s", dag.dag_id, ", ".join(proxied))
