"""`airpeer proxy scaffold` and `airpeer decommission check`: the proxied-state files of the migrate stage.

`proxy scaffold` writes one `<dag_id>.yaml` per peered DAG into the directory that the DAG files give to
`load_proxied_state_from_yaml`, every task `proxied: false`, so that proxying a task is then a one-word edit.
It asks Airflow for the tasks (one `GET /dags/{id}/tasks` per DAG) and never overwrites a file unless `--force`:
the files are the migration's state, edited by hand.

`decommission check` says, per DAG, how far it is: still in Airflow or gone, and which of its tasks still run in
Airflow according to the same directory. The DAGs checked are the peered ones plus any with a file in the
directory (a decommissioned DAG is no longer listed by Airflow, but its file remains). Requests: the DAG list
once, then the tasks of each DAG still in Airflow.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml  # type: ignore[import-untyped,unused-ignore]

from .airflow.errors import AirflowConfigError, AirflowNotFoundError
from .airflow.models import Task
from .in_airflow.proxied_state import DagProxiedFile, ProxiedStateError, parse_proxied_state_file
from .location import add_location_arguments, load_location_from_args
from .registry import PeeredInstance

__all__ = [
    "DagMigrationStatus",
    "ScaffoldResult",
    "add_decommission_parser",
    "add_proxy_parser",
    "check_decommission",
    "proxied_state_yaml",
    "run_decommission_command",
    "run_proxy_command",
    "scaffold_proxied_state",
]

#: Exit status of `airpeer decommission check` while some checked DAG is still in Airflow.
NOT_DECOMMISSIONED_EXIT = 3


def _add_common(parser: argparse.ArgumentParser) -> None:
    add_location_arguments(parser)
    parser.add_argument(
        "--dir",
        required=True,
        type=Path,
        metavar="DIR",
        help="the proxied-state directory: the one the DAG files pass to load_proxied_state_from_yaml",
    )
    parser.add_argument(
        "--instance",
        metavar="NAME",
        help="the peered Airflow instance (needed when the code location peers several)",
    )
    parser.add_argument(
        "--dag",
        action="append",
        dest="dags",
        metavar="DAG_ID",
        help="only this DAG (repeatable; default: every peered DAG)",
    )


def add_proxy_parser(sub: Any) -> argparse.ArgumentParser:
    """`airpeer proxy scaffold` on the subcommands of the `airpeer` parser."""
    proxy: argparse.ArgumentParser = sub.add_parser(
        "proxy",
        help="the proxied-state files of the migrate stage (scaffold)",
        description="The proxied-state files that say which Airflow tasks run in Dagster.",
    )
    actions = proxy.add_subparsers(dest="proxy_command", required=True, parser_class=type(proxy))
    scaffold = actions.add_parser(
        "scaffold",
        help="write <dag_id>.yaml for each peered DAG, every task proxied: false",
        description=(
            "Asks the peered Airflow instance for the tasks of each peered DAG and writes DIR/<dag_id>.yaml "
            "with every task `proxied: false` (upstream tasks first), the starting point of the migrate stage: "
            "set a task to `proxied: true` to have Airflow run it in Dagster, back to false to roll it back. "
            "An existing file is kept unless --force. Prints each file written or kept."
        ),
    )
    _add_common(scaffold)
    scaffold.add_argument("--force", action="store_true", help="overwrite existing files")
    return proxy


def add_decommission_parser(sub: Any) -> argparse.ArgumentParser:
    """`airpeer decommission check` on the subcommands of the `airpeer` parser."""
    decommission: argparse.ArgumentParser = sub.add_parser(
        "decommission",
        help="how far each DAG is from being retired from Airflow (check)",
        description="Retiring migrated DAGs from Airflow.",
    )
    actions = decommission.add_subparsers(
        dest="decommission_command", required=True, parser_class=type(decommission)
    )
    check = actions.add_parser(
        "check",
        help="which DAGs still exist in Airflow, and which still have unproxied tasks",
        description=(
            "For each peered DAG and each DAG with a file in DIR: whether Airflow still lists it, and which of "
            "its tasks are not proxied according to DIR. A DAG whose tasks are all proxied is ready: remove its "
            "file from Airflow and let a Dagster schedule materialize its assets. Exit status 0 when no checked "
            f"DAG is left in Airflow, {NOT_DECOMMISSIONED_EXIT} when some is, 1 on an error."
        ),
    )
    _add_common(check)
    check.add_argument("--json", action="store_true", help="print one JSON document instead of lines")
    return decommission


def _select_instance(peered: Sequence[PeeredInstance], name: str | None) -> PeeredInstance:
    names = [p.instance.name for p in peered]
    if name is not None:
        for one in peered:
            if one.instance.name == name:
                return one
        raise AirflowConfigError(
            f"--instance: the code location peers no instance {name!r} (it peers {names})"
        )
    if len(peered) > 1:
        raise AirflowConfigError(
            f"the code location peers {len(peered)} Airflow instances ({', '.join(names)}): name one with "
            "--instance (each Airflow deployment has its own proxied-state directory)"
        )
    return peered[0]


def _upstream_first(tasks: Sequence[Task]) -> list[Task]:
    """The tasks with each one after its upstream tasks; Airflow's listing order breaks ties."""
    order = {t.task_id: i for i, t in enumerate(tasks)}
    upstream_count = dict.fromkeys(order, 0)
    for task in tasks:
        for down in task.downstream_task_ids:
            if down in upstream_count:
                upstream_count[down] += 1
    by_id = {t.task_id: t for t in tasks}
    ready = sorted((t for t, n in upstream_count.items() if n == 0), key=order.__getitem__)
    out: list[Task] = []
    while ready:
        task = by_id[ready.pop(0)]
        out.append(task)
        for down in task.downstream_task_ids:
            if down in upstream_count:
                upstream_count[down] -= 1
                if upstream_count[down] == 0:
                    ready.append(down)
                    ready.sort(key=order.__getitem__)
    # A cycle cannot come from Airflow; keep any task left anyway rather than drop it.
    out.extend(t for t in tasks if t not in out)
    return out


def proxied_state_yaml(instance_name: str, dag_id: str, tasks: Sequence[Task]) -> str:
    """The text of a scaffolded `<dag_id>.yaml`: a header comment, then every task `proxied: false`."""
    ordered = _upstream_first(tasks)
    header = [
        f"# Proxied state of DAG {dag_id} (Airflow instance {instance_name}), written by `airpeer proxy scaffold`.",
        "# Set a task's `proxied` to true to run it in Dagster, back to false to roll it back; or replace the",
        "# list with `proxied: true` for the whole DAG. Airflow reads this file when it parses the DAG file.",
    ]
    mapped = [t.task_id for t in ordered if t.is_mapped]
    if mapped:
        header.append(f"# Mapped (.expand) tasks cannot be proxied: {', '.join(mapped)}.")
    body: str = yaml.safe_dump(
        {"tasks": [{"id": t.task_id, "proxied": False} for t in ordered]},
        sort_keys=False,
        default_flow_style=False,
    )
    return "\n".join(header) + "\n" + body


@dataclass(frozen=True)
class ScaffoldResult:
    """One DAG's file as `proxy scaffold` left it."""

    dag_id: str
    path: Path
    action: Literal["wrote", "overwrote", "kept", "skipped"]
    tasks: int = 0
    reason: str = ""


def scaffold_proxied_state(
    peered: PeeredInstance,
    directory: Path,
    *,
    dag_ids: Sequence[str] | None = None,
    force: bool = False,
    say: Callable[[ScaffoldResult], None] = lambda _r: None,
) -> list[ScaffoldResult]:
    """Write `<dag_id>.yaml` into `directory` for each peered DAG (or each of `dag_ids`), tasks from Airflow."""
    wanted = sorted(peered.asset_keys_by_dag_id) if dag_ids is None else list(dict.fromkeys(dag_ids))
    unknown = [d for d in wanted if d not in peered.asset_keys_by_dag_id]
    if unknown:
        raise AirflowConfigError(
            f"--dag: {', '.join(unknown)} not peered by instance {peered.instance.name} "
            f"(peered: {', '.join(sorted(peered.asset_keys_by_dag_id)) or 'none'})"
        )
    directory.mkdir(parents=True, exist_ok=True)
    results = []
    for dag_id in wanted:
        path = directory / f"{dag_id}.yaml"
        existed = path.exists()
        if existed and not force:
            result = ScaffoldResult(dag_id, path, "kept", reason="exists; --force overwrites it")
        else:
            try:
                tasks = peered.instance.list_tasks(dag_id)
            except AirflowNotFoundError:
                result = ScaffoldResult(dag_id, path, "skipped", reason="Airflow no longer lists this DAG")
            else:
                # Written whole then renamed: an Airflow parsing the directory meanwhile never reads half a file.
                tmp = path.with_name(f".{path.name}.tmp")
                tmp.write_text(proxied_state_yaml(peered.instance.name, dag_id, tasks))
                tmp.replace(path)
                result = ScaffoldResult(dag_id, path, "overwrote" if existed else "wrote", tasks=len(tasks))
        say(result)
        results.append(result)
    return results


@dataclass(frozen=True)
class DagMigrationStatus:
    """How far one DAG is from decommission."""

    dag_id: str
    in_airflow: bool
    #: The DAG's proxied-state file, None when DIR has none (nothing proxied).
    state_file: Path | None
    #: Tasks Airflow lists for the DAG (empty when it is no longer in Airflow).
    tasks: tuple[str, ...] = ()
    unproxied: tuple[str, ...] = ()

    @property
    def status(self) -> Literal["decommissioned", "ready", "migrating", "not started"]:
        """decommissioned (gone from Airflow), ready (every task proxied), migrating, or not started."""
        if not self.in_airflow:
            return "decommissioned"
        if not self.unproxied:
            return "ready"
        return "migrating" if len(self.unproxied) < len(self.tasks) else "not started"

    def line(self) -> str:
        """One line for the terminal."""
        if not self.in_airflow:
            return f"{self.dag_id}: not in Airflow (decommissioned)"
        if not self.unproxied:
            return (
                f"{self.dag_id}: still in Airflow, every task proxied ({len(self.tasks)}): ready to decommission "
                "(remove the DAG file from Airflow, schedule its assets in Dagster)"
            )
        where = "" if self.state_file is not None else " (no proxied-state file)"
        return (
            f"{self.dag_id}: still in Airflow, {len(self.unproxied)} of {len(self.tasks)} tasks not proxied"
            f"{where}: {', '.join(self.unproxied)}"
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of `decommission check --json`."""
        return {
            "dag_id": self.dag_id,
            "status": self.status,
            "in_airflow": self.in_airflow,
            "state_file": str(self.state_file) if self.state_file is not None else None,
            "tasks": list(self.tasks),
            "unproxied": list(self.unproxied),
        }


def _state_files(directory: Path) -> dict[str, DagProxiedFile]:
    if not directory.is_dir():
        raise AirflowConfigError(f"--dir: no such directory {directory}")
    try:
        return {p.stem: parse_proxied_state_file(p) for p in sorted(directory.glob("*.yaml"))}
    except ProxiedStateError as exc:
        raise AirflowConfigError(str(exc)) from exc


def check_decommission(
    peered: PeeredInstance, directory: Path, *, dag_ids: Iterable[str] | None = None
) -> list[DagMigrationStatus]:
    """The status of each peered DAG and each DAG with a file in `directory` (or of `dag_ids`), by DAG id."""
    files = _state_files(directory)
    wanted = (
        sorted(set(peered.asset_keys_by_dag_id) | set(files)) if dag_ids is None else sorted(set(dag_ids))
    )
    listed = {d.dag_id for d in peered.instance.list_dags()}
    out = []
    for dag_id in wanted:
        state = files.get(dag_id)
        path = state.path if state is not None else None
        if dag_id not in listed:
            out.append(DagMigrationStatus(dag_id, in_airflow=False, state_file=path))
            continue
        tasks = tuple(t.task_id for t in _upstream_first(peered.instance.list_tasks(dag_id)))
        unproxied = tuple(t for t in tasks if state is None or not state.is_task_proxied(t))
        out.append(DagMigrationStatus(dag_id, True, path, tasks=tasks, unproxied=unproxied))
    return out


def run_proxy_command(args: argparse.Namespace) -> int:
    """`airpeer proxy scaffold`."""
    peered = _select_instance(load_location_from_args(args).peered, args.instance)

    def say(result: ScaffoldResult) -> None:
        if result.action in ("wrote", "overwrote"):
            detail = f"{result.tasks} tasks, none proxied"
        else:
            detail = result.reason
        print(f"airpeer proxy scaffold: {result.action} {result.path} ({detail})", flush=True)

    scaffold_proxied_state(peered, args.dir, dag_ids=args.dags, force=args.force, say=say)
    return 0


def run_decommission_command(args: argparse.Namespace) -> int:
    """`airpeer decommission check`."""
    peered = _select_instance(load_location_from_args(args).peered, args.instance)
    statuses = check_decommission(peered, args.dir, dag_ids=args.dags)
    if args.json:
        doc = {
            "format": "airpeer-decommission-check/1",
            "instance": peered.instance.name,
            "dir": str(args.dir),
            "dags": [s.to_dict() for s in statuses],
        }
        json.dump(doc, sys.stdout, indent=2)
        print()
    else:
        for status in statuses:
            print(f"{peered.instance.name}  {status.line()}", flush=True)
    return NOT_DECOMMISSIONED_EXIT if any(s.in_airflow for s in statuses) else 0
