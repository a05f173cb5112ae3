"""`airpeer proxy scaffold` and `airpeer decommission check`: unit tests on a fake Airflow, and one run of both
against the shared real Airflow 3.3 (`airflow3`)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from dagster_airpeer import AirflowInstance, proxy_cli
from dagster_airpeer.cli import main
from dagster_airpeer.in_airflow import load_proxied_state_from_yaml
from dagster_airpeer.location import LoadedLocation
from dagster_airpeer.proxy_cli import (
    NOT_DECOMMISSIONED_EXIT,
    check_decommission,
    scaffold_proxied_state,
)
from dagster_airpeer.registry import PeeredInstance
from tests.airflow.airflow_fakes import (
    FakeAirflow,
    dag_v1,
    dag_v2,
    json_response,
    make_instance,
    task_v1,
    task_v2,
)


# DAG `etl`: extract >> [clean, check] >> publish, listed by Airflow out of order; `fan` has a mapped task.
def _tasks(version: str) -> dict[str, list[dict[str, Any]]]:
    task = task_v2 if version == "v2" else task_v1
    return {
        "etl": [
            task("publish"),
            task("check", ["publish"]),
            task("extract", ["clean", "check"]),
            task("clean", ["publish"]),
        ],
        "fan": [task("split", ["work"]), task("work", is_mapped=True)],
    }


def _fake(dags: tuple[str, ...] = ("etl", "fan"), version: str = "v2") -> FakeAirflow:
    fake = FakeAirflow(version)
    dag = dag_v2 if version == "v2" else dag_v1
    fake.add(
        "GET",
        f"/api/{version}/dags",
        lambda r: json_response(200, {"dags": [dag(d) for d in dags], "total_entries": len(dags)}),
    )
    for dag_id, tasks in _tasks(version).items():
        if dag_id in dags:
            fake.add(
                "GET",
                f"/api/{version}/dags/{dag_id}/tasks",
                lambda r, t=tasks: json_response(200, {"tasks": t, "total_entries": len(t)}),
            )
        else:
            fake.add(
                "GET",
                f"/api/{version}/dags/{dag_id}/tasks",
                lambda r, d=dag_id: json_response(404, {"detail": f"DAG {d} not found"}),
            )
    return fake


def _peered(instance: AirflowInstance, dag_ids: tuple[str, ...] = ("etl", "fan")) -> PeeredInstance:
    return PeeredInstance(
        instance=instance,
        asset_keys_by_dag_id={d: dg.AssetKey(["airflow", d]) for d in dag_ids},
        sensor_name="test_airflow__airflow_dag_runs",
    )


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_scaffold_writes_every_task_unproxied_upstream_first_and_airflow_can_load_it(
    tmp_path: Path, version: str
) -> None:
    peered = _peered(make_instance(_fake(version=version)))
    results = scaffold_proxied_state(peered, tmp_path / "proxied_state")
    assert [(r.dag_id, r.action, r.tasks) for r in results] == [("etl", "wrote", 4), ("fan", "wrote", 2)]
    text = (tmp_path / "proxied_state" / "etl.yaml").read_text()
    assert text.startswith("# Proxied state of DAG etl (Airflow instance test_airflow)")
    assert "\ntasks:\n- id: extract\n  proxied: false\n- id: check\n" in text
    fan = (tmp_path / "proxied_state" / "fan.yaml").read_text()
    assert "# Mapped (.expand) tasks cannot be proxied: work." in fan
    # What the Airflow side reads back: every task listed, none proxied.
    state = load_proxied_state_from_yaml(tmp_path / "proxied_state")
    etl = state.for_dag("etl")
    assert etl is not None
    assert [t.id for t in etl.state.tasks] == ["extract", "check", "clean", "publish"]
    assert not any(state.is_task_proxied("etl", t) for t in ("extract", "check", "clean", "publish"))
    assert etl.task_lines["extract"] > 3  # after the header comment
    assert not list((tmp_path / "proxied_state").glob(".*.tmp"))


def test_scaffold_keeps_existing_files_unless_force(tmp_path: Path) -> None:
    peered = _peered(make_instance(_fake()))
    (tmp_path / "etl.yaml").write_text("proxied: true\n")
    results = scaffold_proxied_state(peered, tmp_path)
    assert [(r.dag_id, r.action) for r in results] == [("etl", "kept"), ("fan", "wrote")]
    assert (tmp_path / "etl.yaml").read_text() == "proxied: true\n"
    results = scaffold_proxied_state(peered, tmp_path, dag_ids=["etl"], force=True)
    assert [(r.dag_id, r.action) for r in results] == [("etl", "overwrote")]
    assert "proxied: false" in (tmp_path / "etl.yaml").read_text()


def test_scaffold_skips_a_dag_airflow_no_longer_lists_and_refuses_an_unpeered_one(tmp_path: Path) -> None:
    peered = _peered(make_instance(_fake(dags=("etl",))))
    results = scaffold_proxied_state(peered, tmp_path)
    assert [(r.dag_id, r.action) for r in results] == [("etl", "wrote"), ("fan", "skipped")]
    assert not (tmp_path / "fan.yaml").exists()
    with pytest.raises(proxy_cli.AirflowConfigError, match="--dag: nope not peered by instance test_airflow"):
        scaffold_proxied_state(peered, tmp_path, dag_ids=["nope"])


def test_decommission_check_statuses(tmp_path: Path) -> None:
    (tmp_path / "etl.yaml").write_text(
        "tasks:\n  - id: extract\n    proxied: true\n  - id: clean\n    proxied: false\n"
        "  - id: check\n    proxied: true\n"
    )  # `publish` has no entry: not proxied
    (tmp_path / "fan.yaml").write_text("proxied: true\n")
    (tmp_path / "old.yaml").write_text("proxied: true\n")  # decommissioned: Airflow no longer lists it
    # `other` is peered, still in Airflow, and has no file: nothing of it is proxied.
    fake = _fake(dags=("etl", "fan", "other"))
    fake.add(
        "GET",
        "/api/v2/dags/other/tasks",
        lambda r: json_response(200, {"tasks": [task_v2("only")], "total_entries": 1}),
    )
    peered = _peered(make_instance(fake), dag_ids=("etl", "fan", "other"))
    statuses = {s.dag_id: s for s in check_decommission(peered, tmp_path)}
    assert {d: s.status for d, s in statuses.items()} == {
        "etl": "migrating",
        "fan": "ready",
        "old": "decommissioned",
        "other": "not started",
    }
    assert statuses["etl"].unproxied == ("clean", "publish")
    assert statuses["etl"].line() == "etl: still in Airflow, 2 of 4 tasks not proxied: clean, publish"
    assert (
        statuses["fan"]
        .line()
        .startswith("fan: still in Airflow, every task proxied (2): ready to decommission")
    )
    assert statuses["old"].line() == "old: not in Airflow (decommissioned)"
    assert statuses["other"].line().endswith("1 of 1 tasks not proxied (no proxied-state file): only")
    # Only the DAGs still in Airflow are asked for their tasks.
    assert not fake.api("GET", "/dags/old/tasks")


def _run(monkeypatch: pytest.MonkeyPatch, peered: list[PeeredInstance], argv: list[str]) -> int:
    monkeypatch.setattr(
        proxy_cli, "load_location_from_args", lambda args: LoadedLocation("file d.py", peered)
    )
    return main(argv)


def test_commands_print_what_they_did_and_exit_status(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    peered = [_peered(make_instance(_fake()))]
    d = str(tmp_path)
    assert _run(monkeypatch, peered, ["proxy", "scaffold", "-f", "d.py", "--dir", d]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"airpeer proxy scaffold: wrote {tmp_path / 'etl.yaml'} (4 tasks, none proxied)",
        f"airpeer proxy scaffold: wrote {tmp_path / 'fan.yaml'} (2 tasks, none proxied)",
    ]
    assert _run(monkeypatch, peered, ["proxy", "scaffold", "-f", "d.py", "--dir", d, "--dag", "etl"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"airpeer proxy scaffold: kept {tmp_path / 'etl.yaml'} (exists; --force overwrites it)"
    ]
    argv = ["decommission", "check", "-f", "d.py", "--dir", d]
    assert _run(monkeypatch, peered, argv) == NOT_DECOMMISSIONED_EXIT
    lines = capsys.readouterr().out.splitlines()
    assert (
        lines[0]
        == "test_airflow  etl: still in Airflow, 4 of 4 tasks not proxied: extract, check, clean, publish"
    )
    assert _run(monkeypatch, peered, [*argv, "--json"]) == NOT_DECOMMISSIONED_EXIT
    doc = json.loads(capsys.readouterr().out)
    assert doc["format"] == "airpeer-decommission-check/1" and doc["instance"] == "test_airflow"
    assert [x["status"] for x in doc["dags"]] == ["not started", "not started"]
    # Every DAG gone from Airflow: exit 0.
    gone = [_peered(make_instance(_fake(dags=())))]
    assert _run(monkeypatch, gone, argv) == 0
    assert "decommissioned" in capsys.readouterr().out
    # A broken file is a one-line error naming the file and line, exit 1.
    (tmp_path / "etl.yaml").write_text("tasks:\n  - id: extract\n    proxied: maybe\n")
    assert _run(monkeypatch, peered, argv) == 1
    (err,) = capsys.readouterr().err.splitlines()
    assert err.startswith(f"airpeer decommission check: {tmp_path / 'etl.yaml'}:")


def test_several_instances_need_instance(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    one = _peered(make_instance(_fake()))
    other_instance = make_instance(_fake())
    other_instance.name = "second"
    two = [one, _peered(other_instance)]
    argv = ["proxy", "scaffold", "-f", "d.py", "--dir", str(tmp_path)]
    assert _run(monkeypatch, two, argv) == 1
    assert "--instance" in capsys.readouterr().err
    assert _run(monkeypatch, two, [*argv, "--instance", "nope"]) == 1
    assert "no instance 'nope'" in capsys.readouterr().err
    assert _run(monkeypatch, two, [*argv, "--instance", "test_airflow"]) == 0


@pytest.mark.parametrize(
    "command", [["proxy"], ["proxy", "scaffold"], ["decommission"], ["decommission", "check"]]
)
def test_help_everywhere_and_usage_errors(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as help_exit:
        main([*command, "--help"])
    assert help_exit.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: airpeer {' '.join(command)}")
    if len(command) == 2:
        assert "--defs FILE" in text and "--dir DIR" in text and "--instance NAME" in text
    assert main(command) == 1
    assert "--help" in capsys.readouterr().err


_DEFS = textwrap.dedent(
    """
    import os
    from dagster_airpeer import AirflowBasicAuthBackend, AirflowInstance, build_defs_from_airflow_instance

    defs = build_defs_from_airflow_instance(
        airflow_instance=AirflowInstance(
            auth_backend=AirflowBasicAuthBackend(
                webserver_url=os.environ["AIRPEER_TEST_AIRFLOW_URL"], username="admin", password="admin"
            ),
            name="proxy_cli_af3",
        ),
        dag_selector_fn=lambda dag: dag.dag_id == "airpeer_two_tasks",
        snapshot_dir=os.environ["AIRPEER_TEST_SNAPSHOT_DIR"],
    )
    """
)


def test_scaffold_then_check_against_real_airflow3(airflow3: Any, tmp_path: Path) -> None:
    """The commands as a user runs them (`python -m dagster_airpeer`), on the shared Airflow 3.3."""
    defs = tmp_path / "defs.py"
    defs.write_text(_DEFS)
    state_dir = tmp_path / "proxied_state"
    env = {
        **os.environ,
        "AIRPEER_TEST_AIRFLOW_URL": airflow3.url,
        "AIRPEER_TEST_SNAPSHOT_DIR": str(tmp_path / "snapshot"),
        "DAGSTER_HOME": str(tmp_path),
    }

    def airpeer(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dagster_airpeer", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    done = airpeer("proxy", "scaffold", "-f", str(defs), "--dir", str(state_dir))
    assert done.returncode == 0, done.stderr
    path = state_dir / "airpeer_two_tasks.yaml"
    assert done.stdout.splitlines() == [f"airpeer proxy scaffold: wrote {path} (2 tasks, none proxied)"]
    assert path.read_text().endswith(
        "tasks:\n- id: extract\n  proxied: false\n- id: load\n  proxied: false\n"
    )
    path.write_text(path.read_text().replace("proxied: false", "proxied: true", 1))

    done = airpeer("decommission", "check", "-f", str(defs), "--dir", str(state_dir), "--json")
    assert done.returncode == NOT_DECOMMISSIONED_EXIT, done.stderr
    (dag,) = json.loads(done.stdout)["dags"]
    assert dag == {
        "dag_id": "airpeer_two_tasks",
        "status": "migrating",
        "in_airflow": True,
        "state_file": str(path),
        "tasks": ["extract", "load"],
        "unproxied": ["load"],
    }
    again = airpeer("proxy", "scaffold", "-f", str(defs), "--dir", str(state_dir))
    assert again.returncode == 0 and "kept" in again.stdout
    assert "proxied: true" in path.read_text()


def test_arguments_namespace_matches_the_parser() -> None:
    """run_* read exactly these attributes (what the unit tests above pass through main)."""
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    proxy_cli.add_proxy_parser(sub)
    args = parser.parse_args(["proxy", "scaffold", "-m", "x", "--dir", "d"])
    assert (args.dir, args.instance, args.dags, args.force) == (Path("d"), None, None, False)
