"""`airpeer list` against scripted Airflows: one line per peered DAG, the last runs of all DAGs from one
listing (not one request per DAG), `--json`, and the command line's help and one-line errors."""

from __future__ import annotations

import argparse
import json
from typing import Any

import dagster as dg
import httpx
import pytest

from dagster_airpeer import AirflowBasicAuthBackend, AirflowInstance, listing
from dagster_airpeer.cli import main
from dagster_airpeer.listing import LAST_RUN_PAGES, list_peered_dags
from dagster_airpeer.location import LoadedLocation
from dagster_airpeer.registry import PeeredInstance
from tests.airflow.airflow_fakes import (
    URL,
    FakeAirflow,
    dag_v1,
    dag_v2,
    json_response,
    make_instance,
    run_v1,
    run_v2,
)


def _fake(version: str, runs: list[dict[str, Any]], total: int | None = None) -> FakeAirflow:
    fake = FakeAirflow(version)
    dag = dag_v2 if version == "v2" else dag_v1
    fake.add(
        "GET",
        f"/api/{version}/dags",
        lambda r: json_response(
            200, {"dags": [dag(d, is_paused=d == "b") for d in "abc"], "total_entries": 3}
        ),
    )

    def page(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        start, limit = body["page_offset"], body["page_limit"]
        return json_response(
            200,
            {"dag_runs": runs[start : start + limit], "total_entries": len(runs) if total is None else total},
        )

    fake.add("POST", f"/api/{version}/dags/~/dagRuns/list", page)
    return fake


def _peered(instance: AirflowInstance) -> PeeredInstance:
    return PeeredInstance(
        instance=instance,
        asset_keys_by_dag_id={d: dg.AssetKey(["peered", "dag", d]) for d in ("b", "a", "gone")},
        sensor_name="test_airflow__airflow_dag_runs",
    )


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_one_line_per_peered_dag_with_one_request_for_the_last_runs(version: str) -> None:
    run = run_v2 if version == "v2" else run_v1
    newest_a = run("a", "a2", "failed", end_date="2025-11-25T10:00:09Z")
    older_a = run("a", "a1", "success", end_date="2025-11-25T09:00:00Z")
    fake = _fake(version, [newest_a, older_a])
    rows = list_peered_dags(_peered(make_instance(fake)))
    assert [r.dag_id for r in rows] == ["a", "b", "gone"]
    a, b, gone = rows
    assert a.last_run is not None and a.last_run.run_id == "a2" and a.paused is False
    assert a.line() == "test_airflow  a -> peered/dag/a  active  last run failed at 2025-11-25T10:00:09Z"
    assert b.paused is True and b.last_run is None and not b.last_run_beyond
    assert b.line().endswith("paused  no finished run")
    assert gone.in_airflow is False and gone.paused is None and "not in Airflow" in gone.line()
    (request,) = fake.api("POST", "/dags/~/dagRuns/list")
    body = json.loads(request.content)
    assert body["order_by"] == "-end_date" and body["dag_ids"] == ["a", "b", "gone"]
    assert body["page_limit"] == 100


def test_last_runs_stop_after_a_bounded_number_of_pages() -> None:
    # DAG `a` ran so often that the newest pages hold only its runs: `b`'s last run is beyond what is read.
    runs = [
        run_v2("a", f"r{i}", end_date=f"2025-11-25T{10 - i // 60:02d}:{59 - i % 60:02d}:00Z")
        for i in range(60)
    ]
    fake = _fake("v2", runs)
    rows = {r.dag_id: r for r in list_peered_dags(_peered(make_instance(fake, page_size=5)))}
    assert len(fake.api("POST", "/dags/~/dagRuns/list")) == LAST_RUN_PAGES
    assert rows["a"].last_run is not None and rows["a"].last_run.run_id == "r0"
    assert rows["b"].last_run is None and rows["b"].last_run_beyond
    assert "older than the latest" in rows["b"].line()
    assert rows["b"].to_dict()["last_run_beyond"] is True


def test_json_and_exit_status(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    good = make_instance(_fake("v2", [run_v2("a", "a1")]))

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    down = AirflowInstance(
        AirflowBasicAuthBackend(URL, "admin", "pw"), name="down_airflow", max_retries=0,
        transport=httpx.MockTransport(refuse),
    )  # fmt: skip
    monkeypatch.setattr(
        listing, "load_location_from_args", lambda args: LoadedLocation("file defs.py", [_peered(good)])
    )
    args = argparse.Namespace(defs_file="defs.py", module_name=None, json=True)
    assert listing.run_list_command(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"format", "location", "dags", "errors"} and doc["errors"] == []
    assert doc["dags"][0] == {
        "instance": "test_airflow",
        "dag_id": "a",
        "asset_key": "peered/dag/a",
        "paused": False,
        "in_airflow": True,
        "last_run": {"run_id": "a1", "state": "success", "end_date": "2025-11-25T10:00:05Z"},
        "last_run_beyond": False,
    }
    monkeypatch.setattr(
        listing,
        "load_location_from_args",
        lambda args: LoadedLocation("file defs.py", [_peered(down), _peered(good)]),
    )
    args.json = False
    assert listing.run_list_command(args) == 1
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 3  # the instance that answered is still listed
    (line,) = err.splitlines()
    assert line.startswith("airpeer list: down_airflow: ")


@pytest.mark.parametrize("command", ["doctor", "list"])
def test_help_and_user_errors_are_one_line_with_exit_1(
    command: str, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    with pytest.raises(SystemExit) as help_exit:
        main([command, "--help"])
    assert help_exit.value.code == 0
    help_text = capsys.readouterr().out
    assert "--defs FILE" in help_text and "-m MODULE" in help_text and "--json" in help_text

    assert main([command]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert "--defs" in line and "--help" in line

    assert main([command, "-f", str(tmp_path / "missing.py")]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line == f"airpeer {command}: --defs: no such file {tmp_path / 'missing.py'}"

    assert main([command, "-f", "defs.py", "-m", "defs"]) == 1
    assert "not allowed with" in capsys.readouterr().err
