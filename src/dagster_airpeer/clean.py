"""Wipe a peering so an example can be replayed: delete Airflow runs and Dagster history of peered DAGs."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from .airflow.errors import AirflowConfigError, AirflowNotFoundError
from .registry import PeeredInstance, clear_registry, peered_instances


@dataclass(frozen=True)
class CleanReport:
    """What `clean` did for one instance."""

    instance_name: str
    dag_ids: tuple[str, ...]
    airflow_runs_deleted: int
    dagster_assets_wiped: int


def load_peered_instances(defs_file: str | Path) -> list[PeeredInstance]:
    """Import a definitions file (as `dagster dev -f` does) and return the Airflow instances it peers."""
    path = Path(defs_file).resolve()
    if not path.is_file():
        raise AirflowConfigError(f"--defs: no such file {path}")
    clear_registry()
    module_name = f"_airpeer_defs_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise AirflowConfigError(f"--defs: {path} is not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    # Like `dagster dev -f`, let the file import its sibling modules.
    sys.path.insert(0, str(path.parent))
    try:
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    found = peered_instances()
    if not found:
        raise AirflowConfigError(
            f"--defs: {path} does not call build_defs_from_airflow_instance(); nothing to clean"
        )
    return found


def clean_peered_instance(
    peered: PeeredInstance,
    dagster_instance: dg.DagsterInstance | None,
    *,
    dag_ids: Iterable[str] | None = None,
    airflow: bool = True,
    dagster: bool = True,
    progress: Callable[[str], None] = lambda _: None,
) -> CleanReport:
    """Delete the runs of the peered DAGs in Airflow and wipe their assets' history in Dagster.

    The sensor's cursor is kept: runs that end after the clean are new completions and are recorded.
    """
    known = peered.asset_keys_by_dag_id
    selected = tuple(known) if dag_ids is None else tuple(dag_ids)
    unknown = [d for d in selected if d not in known]
    if unknown:
        raise AirflowConfigError(
            f"--dag: {', '.join(map(repr, unknown))} not peered from Airflow instance "
            f"'{peered.instance.name}'; peered DAGs: {', '.join(sorted(known)) or '(none)'}"
        )
    deleted = 0
    if airflow:
        for dag_id in selected:
            runs = peered.instance.list_dag_runs(dag_id)
            for index, run in enumerate(runs, start=1):
                with contextlib.suppress(AirflowNotFoundError):  # deleted meanwhile: the goal is reached
                    peered.instance.delete_dag_run(dag_id, run.run_id)
                deleted += 1
                if index % 50 == 0 or index == len(runs):
                    progress(f"{peered.instance.name}: deleted {index}/{len(runs)} Airflow runs of {dag_id}")
    wiped = 0
    if dagster:
        if dagster_instance is None:
            raise AirflowConfigError("a Dagster instance is needed to wipe asset history")
        keys = [known[d] for d in selected]
        if keys:
            dagster_instance.wipe_assets(keys)
        wiped = len(keys)
        progress(f"{peered.instance.name}: wiped the Dagster history of {wiped} assets")
    return CleanReport(peered.instance.name, selected, deleted, wiped)
