"""`airpeer list`: one line per peered DAG: its asset key, whether it is paused, and its last finished run.

Requests per instance: the DAG list (paged at `page_size`) for `paused`, and the latest finished runs of all
peered DAGs together: `list_finished_runs` filtered to the peered DAG ids and ordered by `-end_date`, page by page
until every peered DAG has its latest run or `LAST_RUN_PAGES` pages were read. Airflow's REST API has no
"latest run of each DAG" query (2.x and 3.x), so this costs one request when the recent runs cover every DAG,
and never one request per DAG; a DAG whose last run is older than the runs read shows `last_run: null` with
`last_run_beyond` set.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .airflow.errors import AirflowError
from .airflow.models import DagRun
from .location import add_location_arguments, load_location_from_args
from .registry import PeeredInstance

__all__ = ["LAST_RUN_PAGES", "PeeredDag", "add_list_parser", "list_peered_dags", "run_list_command"]

#: Pages of the newest finished runs read per instance to find each peered DAG's last run.
LAST_RUN_PAGES = 5
#: Runs of any age count: the newest first, so the date only has to be older than every run.
_SINCE = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class PeeredDag:
    """One peered DAG as `airpeer list` shows it."""

    instance: str
    dag_id: str
    asset_key: str
    #: None when the DAG is no longer listed by Airflow.
    paused: bool | None
    in_airflow: bool
    #: The newest finished (success/failed) run, None if none among the runs read.
    last_run: DagRun | None
    #: When `last_run` is None: whether runs beyond those read might hold it (True) or the DAG has none (False).
    last_run_beyond: bool = False

    def line(self) -> str:
        paused = "paused" if self.paused else ("active" if self.paused is False else "not in Airflow")
        if self.last_run is not None and self.last_run.end_date is not None:
            run = f"last run {self.last_run.state} at {_iso(self.last_run.end_date)}"
        elif self.last_run_beyond:
            run = f"last run older than the latest {LAST_RUN_PAGES} pages of finished runs"
        else:
            run = "no finished run"
        return f"{self.instance}  {self.dag_id} -> {self.asset_key}  {paused}  {run}"

    def to_dict(self) -> dict[str, Any]:
        run = self.last_run
        return {
            "instance": self.instance,
            "dag_id": self.dag_id,
            "asset_key": self.asset_key,
            "paused": self.paused,
            "in_airflow": self.in_airflow,
            "last_run": None
            if run is None
            else {
                "run_id": run.run_id,
                "state": run.state,
                "end_date": _iso(run.end_date) if run.end_date is not None else None,
            },
            "last_run_beyond": self.last_run_beyond,
        }


def _iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _latest_runs(peered: PeeredInstance, dag_ids: Sequence[str]) -> tuple[dict[str, DagRun], bool]:
    """Each DAG's newest finished run among the newest `LAST_RUN_PAGES` pages; and whether runs were left."""
    wanted = set(dag_ids)
    latest: dict[str, DagRun] = {}
    offset = 0
    for _ in range(LAST_RUN_PAGES):
        page = peered.instance.list_finished_runs(
            end_date_gte=_SINCE, order_by="-end_date", offset=offset, dag_ids=list(dag_ids)
        )
        for run in page.runs:
            # Offsets shift when runs end meanwhile: a run seen twice is skipped, and the first one seen of a
            # DAG is its newest.
            latest.setdefault(run.dag_id, run)
        offset += len(page.runs)
        if not page.runs or offset >= page.total_entries or wanted <= set(latest):
            return latest, False
    return latest, True


def list_peered_dags(peered: PeeredInstance) -> list[PeeredDag]:
    """The peered DAGs of one instance, sorted by DAG id."""
    dag_ids = sorted(peered.asset_keys_by_dag_id)
    dags = {d.dag_id: d for d in peered.instance.list_dags()}
    latest, left = _latest_runs(peered, dag_ids) if dag_ids else ({}, False)
    out = []
    for dag_id in dag_ids:
        dag = dags.get(dag_id)
        out.append(
            PeeredDag(
                instance=peered.instance.name,
                dag_id=dag_id,
                asset_key=peered.asset_keys_by_dag_id[dag_id].to_user_string(),
                paused=dag.is_paused if dag is not None else None,
                in_airflow=dag is not None,
                last_run=latest.get(dag_id),
                last_run_beyond=left and dag_id not in latest,
            )
        )
    return out


# -- command line -----------------------------------------------------------------------------------------------


def add_list_parser(sub: Any) -> argparse.ArgumentParser:
    """Add `airpeer list` to the subparsers of the `airpeer` command."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "list",
        help="list the peered DAGs: asset key, paused, last finished run",
        description=(
            "Imports the code location (as dagster dev -f/-m) and prints one line per peered DAG of each "
            "Airflow instance: DAG id -> asset key, paused or active, and its last finished run (state and end "
            "date). The last runs of all DAGs of an instance come from one listing of the newest finished runs, "
            "not one request per DAG."
        ),
    )
    add_location_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    return parser


def run_list_command(args: argparse.Namespace) -> int:
    """`airpeer list`: 1 if an instance could not be listed (the others are still listed), else 0."""
    loaded = load_location_from_args(args)
    rows: list[PeeredDag] = []
    errors: list[dict[str, str]] = []
    for entry in loaded.peered:
        try:
            listed = list_peered_dags(entry)
        except AirflowError as exc:
            errors.append({"instance": entry.instance.name, "error": str(exc)})
            print(f"airpeer list: {entry.instance.name}: {exc}", file=sys.stderr, flush=True)
            continue
        rows.extend(listed)
        if not args.json:
            for row in listed:
                print(row.line(), flush=True)
    if args.json:
        doc = {"format": 1, "location": loaded.origin, "dags": [r.to_dict() for r in rows], "errors": errors}
        print(json.dumps(doc, indent=2))
    return 1 if errors else 0
