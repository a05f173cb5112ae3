"""`airpeer` command line (also `python -m dagster_airpeer`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

import dagster as dg

from .airflow.errors import AirflowConfigError, AirflowError
from .clean import InstanceCleanPlan, execute_clean, load_definitions, plan_clean
from .doctor import add_doctor_parser, run_doctor_command
from .listing import add_list_parser, run_list_command
from .location import add_location_arguments
from .proxy_cli import add_decommission_parser, add_proxy_parser, run_decommission_command, run_proxy_command


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    # A user error is one line and exit status 1, like every other error of the command.
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see {self.prog} --help)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="airpeer", description="Tools for an Airflow instance peered with Dagster.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    clean = sub.add_parser(
        "clean",
        help="delete the peered DAGs' runs in Airflow and their assets' history in Dagster",
        description=(
            "Deletes the runs of the peered DAGs in Airflow and wipes the materializations and check results of "
            "their assets (the DAG assets and the assets mapped to the DAGs or their tasks; an asset also "
            "mapped to a DAG that is not cleaned is kept) in the Dagster instance of $DAGSTER_HOME, so an "
            "example can be replayed. Without "
            "--yes it is a dry run: it prints, per Airflow instance and DAG, how many Airflow runs and Dagster "
            "events would go, and deletes nothing. Name the DAGs with --dag, or pass --all. Running and queued "
            "runs are kept unless --include-running. Everything is checked before anything is deleted. Both "
            "systems may keep running: the sensor keeps its place in Airflow's runs (runs that end later are "
            "recorded once) and forgets the last status of the cleaned DAGs, so their next run reports "
            "airflow_run_status again."
        ),
    )
    add_location_arguments(clean)
    which = clean.add_mutually_exclusive_group()
    which.add_argument(
        "--dag",
        action="append",
        dest="dags",
        metavar="DAG_ID",
        help="only this DAG, in every peered instance that has it (repeatable)",
    )
    which.add_argument("--all", action="store_true", help="every peered DAG of every peered instance")
    clean.add_argument("--yes", "-y", action="store_true", help="delete (without it: a dry run)")
    clean.add_argument(
        "--include-running", action="store_true", help="also delete running and queued Airflow runs"
    )
    scope = clean.add_mutually_exclusive_group()
    scope.add_argument("--airflow-only", action="store_true", help="leave Dagster's history alone")
    scope.add_argument("--dagster-only", action="store_true", help="leave Airflow's runs alone")
    add_doctor_parser(sub)
    add_list_parser(sub)
    add_proxy_parser(sub)
    add_decommission_parser(sub)
    return parser


def _say(line: str) -> None:
    print(f"airpeer clean: {line}", flush=True)


def _print_plan(plans: Sequence[InstanceCleanPlan], *, airflow: bool, dagster: bool) -> None:
    for plan in plans:
        if not plan.dags:
            _say(f"{plan.name} ({plan.peered.instance.webserver_url}): none of the named DAGs")
        for dag in plan.dags:
            parts = []
            if airflow:
                kept = f" ({dag.airflow_runs_kept} running or queued kept)" if dag.airflow_runs_kept else ""
                parts.append(f"{dag.airflow_runs} Airflow runs{kept}")
            if dagster:
                parts.append(f"{dag.dagster_events} Dagster events of {len(dag.asset_keys)} assets")
            _say(f"{plan.name} / {dag.dag_id}: would delete {', '.join(parts)}")
            for shared in dag.assets_kept if dagster else ():
                _say(
                    f"{plan.name} / {dag.dag_id}: would keep asset {shared.key.to_user_string()}, also mapped to "
                    f"{', '.join(shared.unselected)} (not cleaned)"
                )


def _clean(args: argparse.Namespace) -> int:
    if not args.dags and not args.all:
        raise AirflowConfigError(
            "say which DAGs to clean: --dag DAG_ID (repeatable) or --all for every peered DAG"
        )
    wipe_dagster = not args.airflow_only
    use_airflow = not args.dagster_only
    if wipe_dagster and not os.environ.get("DAGSTER_HOME"):
        raise AirflowConfigError(
            "DAGSTER_HOME is not set; set it to the directory of the Dagster instance whose history should be "
            "wiped (the one `dagster dev` uses), or pass --airflow-only"
        )
    loaded = load_definitions(defs_file=args.defs_file, module_name=args.module_name)
    options = {"include_running": args.include_running, "airflow": use_airflow, "dagster": wipe_dagster}
    dagster_instance = dg.DagsterInstance.get() if wipe_dagster else None
    try:
        plans = plan_clean(
            loaded.peered,
            dagster_instance,
            dag_ids=None if args.all else args.dags,
            asset_check_keys=loaded.asset_check_keys,
            progress=_say,
            **options,
        )
        _print_plan(plans, airflow=use_airflow, dagster=wipe_dagster)
        if not args.yes:
            _say("dry run: nothing deleted; add --yes to delete")
            return 0
        reports = execute_clean(plans, dagster_instance, progress=_say, **options)
    finally:
        if dagster_instance is not None:
            dagster_instance.dispose()
    for report in reports:
        kept = f" ({report.airflow_runs_kept} running or queued kept)" if report.airflow_runs_kept else ""
        _say(
            f"{report.instance_name}: {report.airflow_runs_deleted} Airflow runs deleted{kept}, "
            f"{report.dagster_assets_wiped} Dagster assets wiped, {report.sensor_cursors_reset} sensor cursors "
            f"reset ({len(report.dag_ids)} DAGs)"
        )
        for warning in report.warnings:
            print(f"airpeer clean: warning: {warning}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `airpeer` command."""
    command = "airpeer"
    try:
        args = _parser().parse_args(argv)
        command = f"airpeer {args.command}"
        if args.command == "clean":
            return _clean(args)
        if args.command == "doctor":
            return run_doctor_command(args)
        if args.command == "list":
            return run_list_command(args)
        if args.command == "proxy":
            command = f"airpeer proxy {args.proxy_command}"
            return run_proxy_command(args)
        if args.command == "decommission":
            command = f"airpeer decommission {args.decommission_command}"
            return run_decommission_command(args)
    except _UsageError as exc:
        print(f"{command}: error: {exc}", file=sys.stderr)
        return 1
    except (AirflowError, dg.DagsterError) as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return 1
    return 2
