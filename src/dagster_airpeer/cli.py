"""`airpeer` command line (also `python -m dagster_airpeer`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import dagster as dg

from .airflow.errors import AirflowError
from .clean import clean_peered_instance, load_peered_instances


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="airpeer", description="Tools for an Airflow instance peered with Dagster."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    clean = sub.add_parser(
        "clean",
        help="delete the peered DAGs' runs in Airflow and their assets' history in Dagster",
        description=(
            "Deletes every run of the peered DAGs in Airflow and wipes the materializations and check results of "
            "their assets in the Dagster instance of $DAGSTER_HOME, so an example can be replayed. Both systems "
            "may keep running. The sensor's cursor is kept."
        ),
    )
    clean.add_argument(
        "--defs", "-f", required=True, help="the definitions file that peers Airflow (as for dagster dev -f)"
    )
    clean.add_argument(
        "--dag", action="append", dest="dags", metavar="DAG_ID", help="only this DAG (repeatable)"
    )
    clean.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    scope = clean.add_mutually_exclusive_group()
    scope.add_argument("--airflow-only", action="store_true", help="leave Dagster's history alone")
    scope.add_argument("--dagster-only", action="store_true", help="leave Airflow's runs alone")
    return parser


def _clean(args: argparse.Namespace) -> int:
    peered = load_peered_instances(args.defs)
    wipe_dagster = not args.airflow_only
    if wipe_dagster and not os.environ.get("DAGSTER_HOME"):
        print(
            "airpeer clean: DAGSTER_HOME is not set; set it to the directory of the Dagster instance whose "
            "history should be wiped (the one `dagster dev` uses), or pass --airflow-only.",
            file=sys.stderr,
        )
        return 2
    names = ", ".join(f"'{p.instance.name}' ({p.instance.webserver_url})" for p in peered)
    if not args.yes:
        if not sys.stdin.isatty():
            print(
                "airpeer clean: refusing to delete without --yes when not run interactively", file=sys.stderr
            )
            return 2
        answer = input(f"Delete the Airflow runs and Dagster history of the DAGs peered from {names}? [y/N] ")
        if answer.strip().lower() not in {"y", "yes"}:
            print("nothing deleted")
            return 1
    dagster_instance = dg.DagsterInstance.get() if wipe_dagster else None
    for entry in peered:
        report = clean_peered_instance(
            entry,
            dagster_instance,
            dag_ids=args.dags,
            airflow=not args.dagster_only,
            dagster=wipe_dagster,
            progress=lambda line: print(f"airpeer clean: {line}", flush=True),
        )
        print(
            f"airpeer clean: {report.instance_name}: {report.airflow_runs_deleted} Airflow runs deleted, "
            f"{report.dagster_assets_wiped} Dagster assets wiped ({len(report.dag_ids)} DAGs)"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `airpeer` command."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "clean":
            return _clean(args)
    except AirflowError as exc:
        print(f"airpeer {args.command}: {exc}", file=sys.stderr)
        return 1
    return 2
