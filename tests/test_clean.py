"""`airpeer clean` against a real Airflow and a real Dagster instance (and its command line rules without one)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from dagster_airpeer import RUN_STATUS_CHECK_NAME, AirflowBasicAuthBackend, AirflowInstance
from dagster_airpeer import _dagster_compat as compat
from dagster_airpeer.clean import execute_clean, plan_clean, reset_sensor_status, select_dags
from dagster_airpeer.cli import _print_plan, main
from dagster_airpeer.events import events_for_run
from dagster_airpeer.feed import FeedState
from dagster_airpeer.observe.events import TASK_STATUS_CHECK_NAME
from dagster_airpeer.registry import DagAssets, PeeredInstance, SharedAsset, assets_to_wipe
from dagster_airpeer.sensor import SensorCursor
from dagster_airpeer.snapshot import fetch_snapshot, snapshot_path, store_snapshot
from devtools.dagster_dev import init_dagster_home

DEFS_DIR = Path(__file__).parent / "defs"
DEFS = DEFS_DIR / "clean_peer.py"
SENSOR = "clean_peered__airflow_dag_runs"
OK_KEY = dg.AssetKey(["clean_peered", "dag", "airpeer_ok"])
FAIL_KEY = dg.AssetKey(["clean_peered", "dag", "airpeer_fail"])
FLAKY_KEY = dg.AssetKey(["clean_peered", "dag", "airpeer_flaky"])
WAIT_DAG = "airpeer_clean_wait"
# A DAG whose task waits for the file named by the run's conf: its runs stay running, and with one active run
# at a time the next one stays queued. Written into the shared stack's own copy of the DAGs folder.
WAIT_DAG_SOURCE = '''"""airpeer_clean_wait: one task that waits for the file named by conf["release"] (airflow DAG)."""

import os
import time

from airpeer_airflow_common import DAG, DAG_KWARGS, PythonOperator


def _wait(**context):
    release = context["dag_run"].conf.get("release", "")
    deadline = time.monotonic() + 600
    while release and not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.5)


with DAG(dag_id="airpeer_clean_wait", max_active_runs=1, **DAG_KWARGS):
    PythonOperator(task_id="wait", python_callable=_wait)
'''


def _home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return home


def _env(airflow: Any, home: Path | None, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "AIRPEER_TEST_AIRFLOW_URL": airflow.url,
        "AIRPEER_TEST_AIRFLOW_USER": airflow.username,
        "AIRPEER_TEST_AIRFLOW_PASSWORD": airflow.password,
        **extra,
    }
    env.pop("DAGSTER_HOME", None)
    if home is not None:
        env["DAGSTER_HOME"] = str(home)
    return env


def _cli(
    airflow: Any, home: Path | None, *args: str, defs: Path = DEFS, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dagster_airpeer", "clean", "--defs", str(defs), *args],
        env=_env(airflow, home, **env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def _client(airflow: Any) -> AirflowInstance:
    return AirflowInstance(
        auth_backend=AirflowBasicAuthBackend(airflow.url, airflow.username, airflow.password), name="c"
    )


def _finished_run(client: AirflowInstance, dag_id: str, prefix: str) -> Any:
    run_id = f"{prefix}_{uuid.uuid4().hex[:8]}"
    client.trigger_dag_run(dag_id, run_id=run_id)
    return client.wait_for_dag_run(dag_id, run_id, timeout=180)


def _record(home: Path, run: Any, key: dg.AssetKey) -> None:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for event in events_for_run(run, key, run_url="u", status_changed=True):
            instance.report_runless_asset_event(event)


def _wait_for(what: str, predicate: Callable[[], bool], timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
            raise AssertionError(f"timed out waiting for {what}\n{tail}")
        time.sleep(0.5)


def _one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    # The error is the last line (loading the definitions may log a warning before it), without a traceback.
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("airpeer clean: "), result.stderr
    for needle in needles:
        assert needle in last, result.stderr


# --- the command line without Airflow ------------------------------------------------------------------------


def test_clean_names_the_flags_when_no_dag_is_given(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    assert main(["clean", "--defs", str(DEFS)]) == 1
    err = capsys.readouterr().err
    assert "--dag" in err and "--all" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["clean"],
        ["clean", "--defs", "x.py", "--all", "--dag", "a"],
        ["clean", "--defs", "x.py", "--nope"],
        [],
    ],
)
def test_usage_errors_are_one_line_and_exit_1(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--help" in err, err


def test_clean_without_dagster_home_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert main(["clean", "--defs", str(DEFS), "--all"]) == 1
    err = capsys.readouterr().err
    assert "DAGSTER_HOME" in err and "--airflow-only" in err and len(err.strip().splitlines()) == 1


def test_a_failing_definitions_file_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    for name in ("AIRPEER_TEST_AIRFLOW_URL", "AIRPEER_TEST_AIRFLOW_USER", "AIRPEER_TEST_AIRFLOW_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    assert main(["clean", "--defs", str(DEFS), "--all"]) == 1
    err = capsys.readouterr().err
    assert "importing" in err and "AIRPEER_TEST_AIRFLOW_URL" in err and len(err.strip().splitlines()) == 1


def test_clean_names_a_module_as_dagster_dev_m_does(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The same loader as `airpeer doctor` and `airpeer list`: a code location is a file or a module.
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "no_peering.py").write_text("import dagster as dg\ndefs = dg.Definitions()\n")
    assert main(["clean", "-m", "no_peering", "--all"]) == 1
    err = capsys.readouterr().err
    assert "-m: module no_peering does not call build_defs_from_airflow_instance()" in err, err
    assert main(["clean", "-m", "not_a_module_here", "--all"]) == 1
    err = capsys.readouterr().err
    assert "no module named 'not_a_module_here'" in err and len(err.strip().splitlines()) == 1, err
    assert main(["clean", "-m", "no_peering", "--defs", str(DEFS), "--all"]) == 1
    assert "not allowed with" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["clean", "--help"]])
def test_help(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert ("--include-running" in out and "dry run" in out) if argv[0] == "clean" else "clean" in out


def test_wipe_assets_removes_check_results_but_not_their_event_log_rows(tmp_path: Path) -> None:
    """Pins what Dagster's `wipe_assets` removes (checked on 1.12 and 1.13), which docs/README rely on.

    It removes the asset's materializations, observations and its checks' execution history (what the UI's
    check tab and `get_asset_check_execution_history` show), for runless and in-run results alike; the raw
    ASSET_CHECK_EVALUATION rows of the event log stay (visible only to low-level event-log queries).
    """
    from dagster._core.events import DagsterEventType

    key = dg.AssetKey(["a"])

    @dg.asset(key=key, check_specs=[dg.AssetCheckSpec("in_run", asset=key)])
    def a():  # type: ignore[no-untyped-def]  # an annotation would be taken for the outputs
        return dg.MaterializeResult(check_results=[dg.AssetCheckResult(check_name="in_run", passed=True)])

    with dg.DagsterInstance.from_config(str(_home(tmp_path))) as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization(key))
        instance.report_runless_asset_event(dg.AssetObservation(key))
        instance.report_runless_asset_event(
            dg.AssetCheckEvaluation(asset_key=key, check_name="runless", passed=True)
        )
        assert dg.materialize([a], instance=instance).success
        checks = [dg.AssetCheckKey(key, "runless"), dg.AssetCheckKey(key, "in_run")]

        def check_rows() -> int:
            return len(
                instance.get_event_records(
                    dg.EventRecordsFilter(event_type=DagsterEventType.ASSET_CHECK_EVALUATION), limit=100
                )
            )

        rows = check_rows()
        assert rows == 2
        instance.wipe_assets([key])
        assert not instance.fetch_materializations(key, limit=10).records
        assert not instance.fetch_observations(key, limit=10).records
        for check in checks:
            assert not instance.event_log_storage.get_asset_check_execution_history(check, limit=10)
        assert check_rows() == rows


def test_reset_forgets_only_the_cleaned_dags_status_and_keeps_the_feed(tmp_path: Path) -> None:
    home = _home(tmp_path)
    name = "unit_peered__airflow_dag_runs"
    before = SensorCursor(
        feed=FeedState.initial(datetime(2026, 1, 1, tzinfo=timezone.utc), timedelta(hours=1)),
        status={"a": True, "b": False, "c": True},
    )
    # Written by Dagster's own `dagster sensor cursor --set`, as a user resetting a cursor would.
    written = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "sensor",
            "cursor",
            "-f",
            str(DEFS_DIR / "clean_sensor_only.py"),
            name,
            "--set",
            before.to_json(),
        ],
        env={**os.environ, "DAGSTER_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert written.returncode == 0, written.stderr
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert reset_sensor_status(instance, name, ["a", "b", "not-there"]) == (1, None)
        (state,) = compat.stored_sensor_states(instance, name)
        assert state.cursor is not None
        after = SensorCursor.from_json(state.cursor)
        assert after.status == {"c": True}
        assert after.feed.to_dict() == before.feed.to_dict()
        assert reset_sensor_status(instance, name, ["a"]) == (0, None)  # nothing left to forget


# --- mapped assets (observe stage), without Airflow --------------------------------------------------------

OWN_A, OWN_B = dg.AssetKey(["unit", "dag", "a"]), dg.AssetKey(["unit", "dag", "b"])
ONLY_A = dg.AssetKey(["warehouse", "only_a"])
SHARED = dg.AssetKey(["warehouse", "shared"])
ACROSS = dg.AssetKey(["warehouse", "across"])
OWN_X = dg.AssetKey(["other", "dag", "x"])


def _peered(
    name: str, own: dict[str, dg.AssetKey], mapped: dict[str, tuple[dg.AssetKey, ...]]
) -> PeeredInstance:
    # Nothing listens on port 9: these tests never ask Airflow (airflow=False).
    instance = AirflowInstance(
        auth_backend=AirflowBasicAuthBackend("http://127.0.0.1:9", "u", "p"), name=name
    )
    return PeeredInstance(
        instance=instance,
        asset_keys_by_dag_id=own,
        sensor_name=f"{name}__airflow_dag_runs",
        mapped_asset_keys_by_dag_id=mapped,
    )


def _two_instances() -> list[PeeredInstance]:
    """DAG a maps ONLY_A, SHARED and ACROSS; DAG b maps SHARED; DAG x of another instance maps ACROSS."""
    unit = _peered("unit", {"a": OWN_A, "b": OWN_B}, {"a": (ONLY_A, SHARED, ACROSS), "b": (SHARED,)})
    return [unit, _peered("other", {"x": OWN_X}, {"x": (ACROSS,)})]


def test_a_mapped_asset_is_wiped_only_when_every_dag_it_is_mapped_to_is_cleaned() -> None:
    peered = _two_instances()
    only_a = assets_to_wipe(peered, {"unit": ("a",), "other": ()})
    assert only_a["unit"]["a"].wiped == (OWN_A, ONLY_A)
    assert only_a["unit"]["a"].kept == (
        SharedAsset(SHARED, ("unit / b",)),
        SharedAsset(ACROSS, ("other / x",)),
    )
    assert only_a["other"] == {}
    # Both DAGs of the instance: SHARED is wiped, once, under the first DAG that maps it.
    both = assets_to_wipe(peered, {"unit": ("a", "b"), "other": ()})
    assert both["unit"]["a"].wiped == (OWN_A, ONLY_A, SHARED)
    assert both["unit"]["b"].wiped == (OWN_B,) and both["unit"]["b"].kept == ()
    assert both["unit"]["a"].kept == (SharedAsset(ACROSS, ("other / x",)),)
    # Everything (--all): every mapped asset is wiped exactly once.
    everything = assets_to_wipe(peered, select_dags(peered, None))
    wiped = [k for dags in everything.values() for dag in dags.values() for k in dag.wiped]
    assert sorted(wiped, key=str) == sorted([OWN_A, OWN_B, OWN_X, ONLY_A, SHARED, ACROSS], key=str)
    assert not [k for dags in everything.values() for dag in dags.values() for k in dag.kept]
    # A DAG's own asset goes with its DAG whatever else maps it.
    odd = _peered("odd", {"a": OWN_A, "b": OWN_B}, {"b": (OWN_A,)})
    assert assets_to_wipe([odd], {"odd": ("a",)})["odd"]["a"] == DagAssets((OWN_A,), ())


def _stored(instance: dg.DagsterInstance, key: dg.AssetKey) -> tuple[int, int]:
    materializations = len(instance.fetch_materializations(key, limit=100).records)
    checks = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(key, TASK_STATUS_CHECK_NAME), limit=100
    )
    return materializations, len(checks)


def test_clean_wipes_the_mapped_assets_of_the_cleaned_dags_and_keeps_shared_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    peered = _two_instances()
    with dg.DagsterInstance.from_config(str(_home(tmp_path))) as instance:
        for key in (OWN_A, OWN_B, OWN_X, ONLY_A, SHARED, ACROSS):
            instance.report_runless_asset_event(dg.AssetMaterialization(key))
        for key in (ONLY_A, SHARED):
            instance.report_runless_asset_event(
                dg.AssetCheckEvaluation(asset_key=key, check_name=TASK_STATUS_CHECK_NAME, passed=False)
            )
        plans = plan_clean(peered, instance, dag_ids=["a"], airflow=False)
        (dag_a,) = plans[0].dags
        assert dag_a.asset_keys == (OWN_A, ONLY_A)
        assert dag_a.dagster_events == 3  # two materializations and ONLY_A's airflow_task_status result
        assert [s.key for s in dag_a.assets_kept] == [SHARED, ACROSS]
        assert plans[1].dags == ()
        _print_plan(plans, airflow=False, dagster=True)
        out = capsys.readouterr().out
        assert "unit / a: would delete 3 Dagster events of 2 assets" in out, out
        assert "would keep asset warehouse/shared, also mapped to unit / b (not cleaned)" in out, out
        assert "would keep asset warehouse/across, also mapped to other / x (not cleaned)" in out, out

        (report, _) = execute_clean(plans, instance, airflow=False)
        assert report.dagster_assets_wiped == 2
        assert any("warehouse/shared" in w and "unit / b" in w for w in report.warnings), report.warnings
        assert _stored(instance, OWN_A) == (0, 0) and _stored(instance, ONLY_A) == (0, 0)
        assert _stored(instance, SHARED) == (1, 1) and _stored(instance, ACROSS) == (1, 0)
        assert _stored(instance, OWN_B) == (1, 0) and _stored(instance, OWN_X) == (1, 0)

        # Both DAGs of "unit": SHARED goes too (counted once); ACROSS stays for DAG x of "other".
        plans = plan_clean(peered, instance, dag_ids=["a", "b"], airflow=False)
        assert [d.asset_keys for d in plans[0].dags] == [(OWN_A, ONLY_A, SHARED), (OWN_B,)]
        assert [d.dagster_events for d in plans[0].dags] == [2, 1]
        execute_clean(plans, instance, airflow=False)
        assert _stored(instance, SHARED) == (0, 0) and _stored(instance, OWN_B) == (0, 0)
        assert _stored(instance, ACROSS) == (1, 0)

        execute_clean(plan_clean(peered, instance, airflow=False), instance, airflow=False)
        assert all(_stored(instance, key) == (0, 0) for key in (ACROSS, OWN_X))


def test_reset_forgets_the_failing_tasks_of_the_cleaned_dags(tmp_path: Path) -> None:
    home = _home(tmp_path)
    name = "unit_peered__airflow_dag_runs"
    feed = FeedState.initial(datetime(2026, 1, 1, tzinfo=timezone.utc), timedelta(hours=1))
    before = SensorCursor(
        feed=feed, status={"a": False}, tasks=feed.copy(), task_failing={"a/load", "ab/load", "b/load"}
    )
    written = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "sensor",
            "cursor",
            "-f",
            str(DEFS_DIR / "clean_sensor_only.py"),
            name,
            "--set",
            before.to_json(),
        ],
        env={**os.environ, "DAGSTER_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert written.returncode == 0, written.stderr

    def cursor(instance: dg.DagsterInstance) -> SensorCursor:
        (state,) = compat.stored_sensor_states(instance, name)
        assert state.cursor is not None
        return SensorCursor.from_json(state.cursor)

    with dg.DagsterInstance.from_config(str(home)) as instance:
        # A DAG with a mapped asset kept (task_dag_ids leaves it out) keeps its failing tasks.
        assert reset_sensor_status(instance, name, ["a"], task_dag_ids=[]) == (1, None)
        assert cursor(instance).status == {} and cursor(instance).task_failing == {
            "a/load",
            "ab/load",
            "b/load",
        }
        # By default a cleaned DAG's failing tasks go with its status ("ab/..." is another DAG's).
        assert reset_sensor_status(instance, name, ["a"]) == (1, None)
        after = cursor(instance)
        assert after.task_failing == {"ab/load", "b/load"}
        assert after.tasks is not None and after.tasks.to_dict() == feed.to_dict()
        assert after.feed.to_dict() == feed.to_dict()
        assert reset_sensor_status(instance, name, ["a"]) == (0, None)


# --- against real Airflow ------------------------------------------------------------------------------------


def test_clean_is_a_dry_run_until_yes_and_needs_all_or_dag(airflow: Any, tmp_path: Path) -> None:
    airflow.wait_for_dags(["airpeer_ok", "airpeer_fail", "airpeer_two_tasks"])
    client = _client(airflow)
    run = _finished_run(client, "airpeer_ok", "clean")
    other = _finished_run(client, "airpeer_two_tasks", "keep")  # not peered by the defs file: must survive
    home = _home(tmp_path)
    _record(home, run, OK_KEY)

    dry = _cli(airflow, home, "--all")
    assert dry.returncode == 0, dry.stderr
    runs_ok = len([r for r in client.list_dag_runs("airpeer_ok") if r.is_finished])
    assert f"clean_peered / airpeer_ok: would delete {runs_ok} Airflow runs" in dry.stdout, dry.stdout
    assert "2 Dagster events of 1 assets" in dry.stdout  # a materialization and a passing check result
    assert "nothing deleted" in dry.stdout
    assert run.run_id in [r.run_id for r in client.list_dag_runs("airpeer_ok")]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.fetch_materializations(OK_KEY, limit=10).records

    _one_line_error(_cli(airflow, home, "--yes"), "--all", "--dag")
    _one_line_error(_cli(airflow, None, "--all", "--yes"), "DAGSTER_HOME")
    _one_line_error(_cli(airflow, home, "--dag", "nope", "--yes"), "'nope'", "airpeer_ok")

    done = _cli(airflow, home, "--all", "--yes")
    assert done.returncode == 0, done.stderr
    assert "Airflow runs deleted" in done.stdout and airflow.password not in done.stdout + done.stderr
    assert all(
        not r.is_finished for r in client.list_dag_runs("airpeer_ok") + client.list_dag_runs("airpeer_fail")
    )
    assert other.run_id in [r.run_id for r in client.list_dag_runs("airpeer_two_tasks")]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert not instance.fetch_materializations(OK_KEY, limit=10).records
        check = dg.AssetCheckKey(OK_KEY, RUN_STATUS_CHECK_NAME)
        assert not instance.event_log_storage.get_asset_check_execution_history(check, limit=10)


@pytest.fixture
def wait_dag(airflow: Any, tmp_path: Path) -> Iterator[Path]:
    """The waiting DAG in the shared stack; yields the release directory, releases every run at the end."""
    target = Path(airflow.dags_folder) / f"{WAIT_DAG}.py"
    if not target.exists():
        target.write_text(WAIT_DAG_SOURCE)
    airflow.wait_for_dags([WAIT_DAG], timeout=180)
    releases = tmp_path / "release"
    releases.mkdir()
    try:
        yield releases
    finally:
        (releases / "go").write_text("")


def test_clean_keeps_running_and_queued_runs_unless_asked(
    airflow: Any, tmp_path: Path, wait_dag: Path
) -> None:
    client = _client(airflow)
    go = wait_dag / "go"
    finished = f"done_{uuid.uuid4().hex[:8]}"
    (wait_dag / "now").write_text("")
    client.trigger_dag_run(WAIT_DAG, run_id=finished, conf={"release": str(wait_dag / "now")})
    client.wait_for_dag_run(WAIT_DAG, finished, timeout=180)
    running, queued = f"running_{uuid.uuid4().hex[:8]}", f"queued_{uuid.uuid4().hex[:8]}"
    client.trigger_dag_run(WAIT_DAG, run_id=running, conf={"release": str(go)})
    _wait_for("the run to be running", lambda: client.get_dag_run(WAIT_DAG, running).state == "running", 180)
    client.trigger_dag_run(WAIT_DAG, run_id=queued, conf={"release": str(go)})
    home = _home(tmp_path)

    def ours() -> dict[str, str]:
        return {
            r.run_id: r.state
            for r in client.list_dag_runs(WAIT_DAG)
            if r.run_id in {finished, running, queued}
        }

    assert ours() == {finished: "success", running: "running", queued: "queued"}
    dry = _cli(airflow, home, "--dag", WAIT_DAG)
    assert dry.returncode == 0, dry.stderr
    unfinished = len([r for r in client.list_dag_runs(WAIT_DAG) if not r.is_finished])
    assert f"({unfinished} running or queued kept)" in dry.stdout, dry.stdout

    kept = _cli(airflow, home, "--dag", WAIT_DAG, "--yes")
    assert kept.returncode == 0, kept.stderr
    assert ours() == {running: "running", queued: "queued"}

    gone = _cli(airflow, home, "--dag", WAIT_DAG, "--include-running", "--yes")
    assert gone.returncode == 0, gone.stderr
    assert ours() == {}


def test_clean_checks_every_instance_before_deleting_anything(airflow: Any, tmp_path: Path) -> None:
    airflow.wait_for_dags(["airpeer_ok", "airpeer_two_tasks"])
    client = _client(airflow)
    run = _finished_run(client, "airpeer_ok", "two")
    home = _home(tmp_path)
    _record(home, run, OK_KEY)
    # The second instance answers nothing now; it loads from the snapshot it left while it was up.
    down_url = "http://127.0.0.1:9"
    down = AirflowInstance(
        auth_backend=AirflowBasicAuthBackend(down_url, airflow.username, airflow.password), name="clean_down"
    )
    snapshot = fetch_snapshot(client).model_copy(
        update={"instance_name": "clean_down", "webserver_url": down.webserver_url}
    )
    store_snapshot(snapshot_path(home / "airpeer", "clean_down"), snapshot)
    defs = DEFS_DIR / "clean_two_peers.py"

    def untouched() -> bool:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            recorded = bool(instance.fetch_materializations(OK_KEY, limit=10).records)
        return recorded and run.run_id in [r.run_id for r in client.list_dag_runs("airpeer_ok")]

    unreachable = _cli(
        airflow, home, "--dag", "airpeer_ok", "--yes", defs=defs, AIRPEER_TEST_AIRFLOW_DOWN_URL=down_url
    )
    _one_line_error(unreachable, "clean_down")
    assert untouched()
    unknown = _cli(
        airflow,
        home,
        "--dag",
        "airpeer_ok",
        "--dag",
        "nope",
        "--yes",
        defs=defs,
        AIRPEER_TEST_AIRFLOW_DOWN_URL=down_url,
    )
    _one_line_error(unknown, "'nope'", "'clean_down': airpeer_ok, airpeer_two_tasks")
    assert untouched()
    # A DAG peered by one instance only is cleaned there (the unreachable one is not asked).
    only_up = _cli(
        airflow, home, "--dag", "airpeer_fail", "--yes", defs=defs, AIRPEER_TEST_AIRFLOW_DOWN_URL=down_url
    )
    assert only_up.returncode == 0, only_up.stderr
    assert untouched()


def test_clean_wipes_only_the_assets_of_the_peering(airflow: Any, tmp_path: Path) -> None:
    airflow.wait_for_dags(["airpeer_ok", "airpeer_fail"])
    client = _client(airflow)
    run = _finished_run(client, "airpeer_ok", "own")
    home = _home(tmp_path)
    _record(home, run, OK_KEY)
    spec = importlib.util.spec_from_file_location(
        "clean_other_location", DEFS_DIR / "clean_other_location.py"
    )
    assert spec is not None and spec.loader is not None
    other = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(other)
    other_key = dg.AssetKey("other_location_asset")
    other_check = dg.AssetCheckKey(other_key, "rows")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert dg.materialize([other.other_location_asset], instance=instance).success

    done = _cli(airflow, home, "--all", "--yes")
    assert done.returncode == 0, done.stderr
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert not instance.fetch_materializations(OK_KEY, limit=10).records
        assert len(instance.fetch_materializations(other_key, limit=10).records) == 1
        assert len(instance.event_log_storage.get_asset_check_execution_history(other_check, limit=10)) == 1
        # Another location materializes the key of a peered DAG's asset (as a migrated dbt model would):
        # clean refuses to wipe history that is not the peering's alone, and deletes nothing.
        assert dg.materialize([other.shared_key_asset], instance=instance).success
    run = _finished_run(client, "airpeer_ok", "own")
    refused = _cli(airflow, home, "--all", "--yes")
    _one_line_error(refused, "clean_peered/dag/airpeer_fail", "--dag")
    assert run.run_id in [r.run_id for r in client.list_dag_runs("airpeer_ok")]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.fetch_materializations(FAIL_KEY, limit=10).records
    assert _cli(airflow, home, "--dag", "airpeer_ok", "--yes").returncode == 0


# --- under the real dagster-daemon ---------------------------------------------------------------------------


@pytest.fixture
def daemon(airflow: Any, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    home = _home(tmp_path)
    init_dagster_home(home)  # before the daemon and its code server race to create it
    (tmp_path / "workspace.yaml").write_text(f"load_from:\n  - python_file: {DEFS}\n")
    log_path = tmp_path / "daemon.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "dagster-daemon"),
                "run",
                "-w",
                str(tmp_path / "workspace.yaml"),
            ],
            cwd=tmp_path,
            env=_env(airflow, home, AIRPEER_TEST_SENSOR_INTERVAL="1"),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield home, log_path
        finally:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()


def _cursor(home: Path) -> SensorCursor | None:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        states = compat.stored_sensor_states(instance, SENSOR)
        return SensorCursor.from_json(states[0].cursor) if states and states[0].cursor else None


def _recorded(home: Path, key: dg.AssetKey) -> tuple[list[str], list[bool]]:
    """The Airflow runs recorded as materializations of `key`, and its status check's results, oldest first."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = [
            str(r.asset_materialization.metadata["airflow/run_id"].value)
            for r in reversed(instance.fetch_materializations(key, limit=100).records)
            if r.asset_materialization
        ]
        check = dg.AssetCheckKey(key, RUN_STATUS_CHECK_NAME)
        history = instance.event_log_storage.get_asset_check_execution_history(check, limit=100)
        return runs, [h.status.value == "SUCCEEDED" for h in reversed(history)]


def test_clean_resets_the_sensor_status_while_the_daemon_ticks(
    airflow: Any, daemon: tuple[Path, Path]
) -> None:
    home, log = daemon
    airflow.wait_for_dags(["airpeer_flaky"])
    client = _client(airflow)
    failed = f"fail_{uuid.uuid4().hex[:8]}"
    client.trigger_dag_run("airpeer_flaky", run_id=failed, conf={"fail": True})
    client.wait_for_dag_run("airpeer_flaky", failed, timeout=180)

    def failure_recorded() -> bool:
        cursor = _cursor(home)
        return cursor is not None and cursor.status.get("airpeer_flaky") is False

    _wait_for("the daemon to record the failed run", failure_recorded, 180, log)
    assert _recorded(home, FLAKY_KEY)[1][-1:] == [False]

    done = _cli(airflow, home, "--dag", "airpeer_flaky", "--yes")  # the daemon keeps ticking meanwhile
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 sensor cursors reset" in done.stdout, done.stdout
    cursor = _cursor(home)
    assert cursor is not None and "airpeer_flaky" not in cursor.status
    assert _recorded(home, FLAKY_KEY) == ([], [])

    after = _finished_run(client, "airpeer_flaky", "after")
    _wait_for("the run after the clean", lambda: bool(_recorded(home, FLAKY_KEY)[0]), 180, log)
    # Recorded once, and as the first success of a DAG with no failure on record: a materialization alone. With
    # the failure still in the cursor, it would pass the status check as a recovery from a wiped failure.
    assert _recorded(home, FLAKY_KEY) == ([after.run_id], [])
    cursor = _cursor(home)
    assert cursor is not None and cursor.status.get("airpeer_flaky") is True
