"""`airpeer doctor` against scripted Airflows (tests/airflow/airflow_fakes.py) and a test Dagster instance:
each check's ok / warn / fail, the `--json` shape, exit statuses, and that no secret is ever printed.

The real-Airflow run of the command is tests/test_doctor_integration.py.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest

from dagster_airpeer import AirflowBasicAuthBackend, AirflowInstance, AirflowTokenAuthBackend, doctor
from dagster_airpeer import _dagster_compat as compat
from dagster_airpeer.doctor import CHECKS, Finding, check_instance, lag_threshold, run_doctor
from dagster_airpeer.feed import FeedState
from dagster_airpeer.location import LoadedLocation, load_location
from dagster_airpeer.registry import PeeredInstance
from dagster_airpeer.sensor import SensorCursor
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

#: The Date every scripted answer carries (json_response's default).
AIRFLOW_NOW = datetime(2025, 11, 25, 10, 0, 0, tzinfo=timezone.utc)
SENSOR = "test_airflow__airflow_dag_runs"
PASSWORD = "s3cret-pw"
TOKEN = "tok-9f8e7d6c5b4a-secret"


def _fake(version: str = "v2", *, dags: tuple[str, ...] = ("a", "b", "c"), **kwargs: Any) -> FakeAirflow:
    fake = FakeAirflow(version, **kwargs)
    dag = dag_v2 if version == "v2" else dag_v1
    run = run_v2 if version == "v2" else run_v1
    fake.add(
        "GET",
        f"/api/{version}/version",
        lambda r: json_response(
            200, {"version": "3.3.2" if version == "v2" else "2.11.2", "git_version": None}
        ),
    )
    fake.add(
        "GET",
        f"/api/{version}/dags",
        lambda r: json_response(
            200, {"dags": [dag(d, is_paused=d == "b") for d in dags], "total_entries": len(dags)}
        ),
    )
    fake.add(
        "POST",
        f"/api/{version}/dags/~/dagRuns/list",
        lambda r: json_response(200, {"dag_runs": [run("a", "r1")], "total_entries": 1}),
    )
    return fake


def _peered(instance: AirflowInstance, **over: Any) -> PeeredInstance:
    values: dict[str, Any] = {
        "instance": instance,
        "asset_keys_by_dag_id": {d: dg.AssetKey([instance.name, "dag", d]) for d in ("a", "b")},
        "sensor_name": SENSOR,
        "dag_selector_fn": lambda dag: dag.dag_id in {"a", "b"},
    }
    values.update(over)
    return PeeredInstance(**values)


def _state(cursor: str | None, *, running: bool = True) -> compat.StoredSensorState:
    return compat.StoredSensorState(
        name=SENSOR, origin_id="o", selector_id="s", running=running, cursor=cursor, min_interval=30,
        last_finished_tick=1.0, last_started_tick=1.0,
    )  # fmt: skip


def _cursor(watermark: datetime) -> str:
    return SensorCursor(feed=FeedState(watermark=watermark), status={"a": True, "b": False}).to_json()


@pytest.fixture(scope="module")
def dagster() -> Iterator[dg.DagsterInstance]:
    # Only handed through: what the checks read from it is scripted by `sensor_store`.
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def sensor_store(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What the Dagster instance holds about the sensor, scripted: its states, latest tick, daemon heartbeat."""
    import time

    store: dict[str, Any] = {
        "states": [_state(_cursor(AIRFLOW_NOW - timedelta(minutes=5)))],
        "tick": compat.SensorTick("success", time.time() - 10, None),
        "heartbeat": time.time() - 5,
    }
    monkeypatch.setattr(compat, "stored_sensor_states", lambda instance, name: list(store["states"]))
    monkeypatch.setattr(compat, "latest_sensor_tick", lambda instance, state: store["tick"])
    monkeypatch.setattr(compat, "latest_sensor_daemon_heartbeat", lambda instance: store["heartbeat"])
    return store


def _by_check(findings: list[Finding]) -> dict[str, Finding]:
    assert [f.check for f in findings] == list(CHECKS)
    return {f.check: f for f in findings}


def _run(peered: PeeredInstance, dagster: dg.DagsterInstance | None, **kwargs: Any) -> dict[str, Finding]:
    kwargs.setdefault("now", lambda: AIRFLOW_NOW)
    return _by_check(check_instance(peered, dagster, **kwargs))


# -- each check ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_healthy_instance_every_check_ok(
    version: str, dagster: dg.DagsterInstance, sensor_store: dict[str, Any]
) -> None:
    fake = _fake(version)
    found = _run(_peered(make_instance(fake)), dagster)
    assert {c: f.status for c, f in found.items()} == dict.fromkeys(CHECKS, "ok"), [
        f.line() for f in found.values()
    ]
    assert found["airflow"].data["api_version"] == version
    assert found["airflow"].data["api_version_override"] is None
    assert "detected from its health endpoint" in found["airflow"].found
    assert found["dags"].data == {"dags": 3, "peered": 2, "peered_at_load": 2, "new_since_load": []}
    assert found["run_page"].data["page_size"] == 100 and found["run_page"].data["runs"] == 1
    assert found["cursor"].data["lag_seconds"] == pytest.approx(300, abs=2)
    assert found["cursor"].data["failing"] == ["b"]
    # The run page is read at the instance's page size; the login is one request of one run.
    pages = [json.loads(r.content)["page_limit"] for r in fake.api("POST", "/dags/~/dagRuns/list")]
    assert pages == [1, 100]


def test_api_version_override_is_reported(dagster: dg.DagsterInstance, sensor_store: dict[str, Any]) -> None:
    fake = _fake()
    found = _run(_peered(make_instance(fake, api_version="v2")), dagster)
    assert found["airflow"].status == "ok"
    assert "api_version='v2' set on AirflowInstance" in found["airflow"].found
    assert found["airflow"].data["api_version_override"] == "v2"
    assert not [r for r in fake.requests if r.url.path.endswith("health")]


def test_unreachable_airflow_fails_but_sensor_and_cursor_still_run(
    dagster: dg.DagsterInstance, sensor_store: dict[str, Any]
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    instance = AirflowInstance(
        AirflowBasicAuthBackend(URL, "admin", PASSWORD), name="test_airflow", max_retries=0,
        transport=httpx.MockTransport(refuse),
    )  # fmt: skip
    found = _run(_peered(instance), dagster)
    assert found["airflow"].status == "fail" and "Airflow is up" in found["airflow"].action
    for check in ("login", "clock", "dags", "run_page"):
        assert found[check].status == "fail" and found[check].found.startswith("not checked")
    assert found["sensor"].status == "ok"
    assert found["cursor"].status == "ok" and "this machine's clock" in found["cursor"].found


def test_refused_login_fails_login_and_skips_what_needs_it(
    dagster: dg.DagsterInstance, sensor_store: dict[str, Any]
) -> None:
    fake = _fake()
    instance = AirflowInstance(
        AirflowBasicAuthBackend(URL, "admin", "wrong-" + PASSWORD), name="test_airflow", max_retries=0,
        transport=fake.transport(),
    )  # fmt: skip
    found = _run(_peered(instance), dagster)
    assert found["airflow"].status == "ok" and "version not readable" in found["airflow"].found
    assert found["login"].status == "fail" and "credentials" in found["login"].action
    assert found["dags"].status == "fail" and found["run_page"].status == "fail"
    assert found["sensor"].status == "ok"


def test_clock_skew_above_the_threshold_warns(
    dagster: dg.DagsterInstance, sensor_store: dict[str, Any]
) -> None:
    ahead = AIRFLOW_NOW - timedelta(seconds=doctor.CLOCK_SKEW_WARN_SECONDS + 30)
    found = _run(_peered(make_instance(_fake())), dagster, now=lambda: ahead)
    assert found["clock"].status == "warn"
    assert "ahead of this machine" in found["clock"].found and "exactly once" in found["clock"].action
    assert found["clock"].data["skew_seconds"] == pytest.approx(60, abs=2)
    within = AIRFLOW_NOW + timedelta(seconds=doctor.CLOCK_SKEW_WARN_SECONDS - 5)
    assert _run(_peered(make_instance(_fake())), dagster, now=lambda: within)["clock"].status == "ok"


def test_no_dag_peered_warns_and_new_dags_are_named(
    dagster: dg.DagsterInstance, sensor_store: dict[str, Any]
) -> None:
    none = _run(_peered(make_instance(_fake()), dag_selector_fn=lambda dag: False), dagster)["dags"]
    assert none.status == "warn" and "dag_selector_fn" in none.action
    new = _run(_peered(make_instance(_fake()), dag_selector_fn=None), dagster)["dags"]
    assert new.status == "ok" and new.data["new_since_load"] == ["c"] and "reload" in new.action


def test_slow_run_page_warns(dagster: dg.DagsterInstance, sensor_store: dict[str, Any]) -> None:
    ticks = iter([0.0, doctor.RUN_PAGE_WARN_SECONDS + 1.0])
    found = _run(_peered(make_instance(_fake())), dagster, timer=lambda: next(ticks))
    assert found["run_page"].status == "warn" and "page_size" in found["run_page"].action


def test_sensor_states(dagster: dg.DagsterInstance, sensor_store: dict[str, Any]) -> None:
    import time

    peered = _peered(make_instance(_fake()))
    sensor_store["states"] = [_state(_cursor(AIRFLOW_NOW), running=False)]
    stopped = _run(peered, dagster)["sensor"]
    assert stopped.status == "warn" and f"dagster sensor start {SENSOR}" in stopped.action
    assert stopped.data["running"] is False

    sensor_store["states"] = [_state(_cursor(AIRFLOW_NOW))]
    sensor_store["heartbeat"] = time.time() - doctor.DAEMON_STALE_SECONDS - 60
    no_daemon = _run(peered, dagster)["sensor"]
    assert no_daemon.status == "warn" and "dagster-daemon" in no_daemon.action

    sensor_store["heartbeat"] = time.time()
    sensor_store["tick"] = compat.SensorTick("failure", time.time(), "AirflowAuthError: refused")
    failed = _run(peered, dagster)["sensor"]
    assert failed.status == "fail" and "AirflowAuthError: refused" in failed.found

    sensor_store["states"] = []
    never = _by_check(check_instance(peered, dagster, now=lambda: AIRFLOW_NOW))
    assert never["sensor"].status == "warn" and "never run" in never["sensor"].found
    assert never["cursor"].status == "warn" and "no cursor" in never["cursor"].found


def test_without_dagster_home_the_sensor_checks_fail_and_the_others_run(sensor_store: dict[str, Any]) -> None:
    found = _run(_peered(make_instance(_fake())), None)
    assert found["sensor"].status == "fail" and "DAGSTER_HOME" in found["sensor"].found
    assert found["cursor"].status == "fail"
    assert found["dags"].status == "ok"


def test_cursor_lag_beyond_the_window_warns_and_garbage_fails(
    dagster: dg.DagsterInstance, sensor_store: dict[str, Any]
) -> None:
    peered = _peered(make_instance(_fake()), late_commit_window=timedelta(minutes=5))
    assert lag_threshold(peered) == timedelta(minutes=5, seconds=120)
    sensor_store["states"] = [_state(_cursor(AIRFLOW_NOW - timedelta(minutes=8)))]
    behind = _run(peered, dagster)["cursor"]
    assert behind.status == "warn" and behind.data["lag_seconds"] == pytest.approx(480, abs=2)
    assert behind.data["watermark"] == "2025-11-25T09:52:00Z"
    sensor_store["states"] = [_state("{not json")]
    garbage = _run(peered, dagster)["cursor"]
    assert garbage.status == "fail" and "reset the cursor" in garbage.action


def test_a_check_that_raises_unexpectedly_is_one_fail_line(
    dagster: dg.DagsterInstance, sensor_store: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(instance: object, state: object) -> None:
        raise RuntimeError("storage went away")

    monkeypatch.setattr(compat, "latest_sensor_tick", broken)
    found = _run(_peered(make_instance(_fake())), dagster)
    assert found["sensor"].status == "fail" and "RuntimeError: storage went away" in found["sensor"].found
    assert found["cursor"].status == "ok"


# -- several instances, output, exit status, secrets ---------------------------------------------------------------


def test_progress_names_each_instance_as_it_starts(
    dagster: dg.DagsterInstance, sensor_store: dict[str, Any]
) -> None:
    events: list[str] = []
    first = make_instance(_fake())
    second = AirflowInstance(
        AirflowBasicAuthBackend(URL, "admin", PASSWORD), name="other_airflow", transport=_fake().transport()
    )
    findings = run_doctor(
        [_peered(first), _peered(second)], dagster,
        report=lambda f: events.append(f"{f.instance}:{f.check}"), progress=events.append,
    )  # fmt: skip
    assert len(findings) == 2 * len(CHECKS)
    assert events[0] == f"checking test_airflow ({URL}) [1/2]"
    assert events[len(CHECKS) + 1] == f"checking other_airflow ({URL}) [2/2]"


def _command(monkeypatch: pytest.MonkeyPatch, peered: list[PeeredInstance], home: Path | None) -> None:
    monkeypatch.setattr(
        doctor, "load_location_from_args", lambda args: LoadedLocation("file defs.py", peered)
    )
    if home is None:
        monkeypatch.delenv("DAGSTER_HOME", raising=False)
    else:
        home.mkdir(exist_ok=True)
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        monkeypatch.setenv("DAGSTER_HOME", str(home))


def _args(*extra: str) -> argparse.Namespace:
    return argparse.Namespace(defs_file="defs.py", module_name=None, json="--json" in extra)


def test_json_document_shape_and_exit_status(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    sensor_store: dict[str, Any],
) -> None:
    _command(monkeypatch, [_peered(make_instance(_fake()))], tmp_path / "home")
    assert doctor.run_doctor_command(_args("--json")) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert set(doc) == {"format", "location", "ok", "counts", "instances", "checks"}
    assert doc["format"] == doctor.JSON_FORMAT_VERSION == 1
    assert doc["ok"] is True and doc["instances"] == ["test_airflow"] and doc["location"] == "file defs.py"
    assert sum(doc["counts"].values()) == len(CHECKS) == len(doc["checks"])
    for check in doc["checks"]:
        assert set(check) == {"instance", "check", "status", "found", "action", "data"}
        assert check["status"] in ("ok", "warn", "fail")
    assert "checking test_airflow" in err  # progress on stderr, stdout stays one JSON document

    sensor_store["states"] = [_state("{not json")]
    assert doctor.run_doctor_command(_args("--json")) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False and doc["counts"]["fail"] == 1


def test_text_output_one_line_per_check_and_exit_1_on_a_failure(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    sensor_store: dict[str, Any],
) -> None:
    _command(monkeypatch, [_peered(make_instance(_fake()))], None)  # no DAGSTER_HOME: sensor checks fail
    assert doctor.run_doctor_command(_args()) == 1
    lines = capsys.readouterr().out.splitlines()
    checks = [line for line in lines if not line.startswith("airpeer doctor:")]
    assert len(checks) == len(CHECKS)
    assert checks[0].startswith("ok   test_airflow  airflow: Airflow 3.3.2")
    assert checks[5].startswith("fail test_airflow  sensor:") and " -> set DAGSTER_HOME" in checks[5]
    assert lines[0] == f"airpeer doctor: checking test_airflow ({URL}) [1/1]"
    assert lines[-1].startswith("airpeer doctor: ") and "2 fail" in lines[-1]


@pytest.mark.parametrize("as_json", [False, True])
def test_no_secret_is_printed(
    as_json: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    sensor_store: dict[str, Any],
) -> None:
    good = _fake()
    wrong_password = AirflowInstance(
        AirflowBasicAuthBackend(URL, "admin", PASSWORD + "-typo"), name="typo_airflow", max_retries=0,
        transport=_fake().transport(),
    )  # fmt: skip
    token_fake = _fake("v1")
    token_fake.valid_tokens.add(TOKEN)
    token = AirflowInstance(
        AirflowTokenAuthBackend(URL, TOKEN), name="token_airflow", transport=token_fake.transport()
    )
    refused_token = AirflowInstance(
        AirflowTokenAuthBackend(URL, TOKEN + "x"), name="refused_token", max_retries=0,
        transport=_fake("v1").transport(),
    )  # fmt: skip
    peered = [_peered(make_instance(good)), _peered(wrong_password), _peered(token), _peered(refused_token)]
    _command(monkeypatch, peered, tmp_path / "home")
    assert doctor.run_doctor_command(_args("--json" if as_json else "")) == 1
    out, err = capsys.readouterr()
    secrets = [PASSWORD, TOKEN, *good.issued]
    assert good.issued, "the fake issued a JWT to the good instance"
    for secret in secrets:
        assert secret not in out and secret not in err
    assert "typo_airflow  login" in out or '"instance": "typo_airflow"' in out


# -- loading the code location ------------------------------------------------------------------------------------

_DEFS = """
from dagster_airpeer import AirflowBasicAuthBackend, AirflowInstance
from dagster_airpeer.registry import PeeredInstance, register

register(PeeredInstance(
    instance=AirflowInstance(AirflowBasicAuthBackend("http://127.0.0.1:1", "u", "p"), name="{name}"),
    asset_keys_by_dag_id={{}},
    sensor_name="{name}__airflow_dag_runs",
))
"""


def test_location_by_file_and_by_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "by_file.py").write_text(_DEFS.format(name="by_file"))
    loaded = load_location(defs_file=tmp_path / "by_file.py")
    assert [p.instance.name for p in loaded.peered] == ["by_file"]
    (tmp_path / "airpeer_doctor_by_module.py").write_text(_DEFS.format(name="by_module"))
    monkeypatch.chdir(tmp_path)
    for _ in range(2):  # a second load in one process registers again
        loaded = load_location(module_name="airpeer_doctor_by_module")
        assert [p.instance.name for p in loaded.peered] == ["by_module"]
        assert loaded.origin == "module airpeer_doctor_by_module"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"defs_file": "/nonexistent/defs.py"}, "--defs: no such file"),
        ({"module_name": "no_such_module_for_airpeer"}, "-m: no module named 'no_such_module_for_airpeer'"),
        ({}, "either --defs FILE or -m MODULE"),
    ],
)
def test_location_errors_are_one_line(kwargs: dict[str, Any], message: str) -> None:
    from dagster_airpeer import AirflowConfigError

    with pytest.raises(AirflowConfigError, match=message) as caught:
        load_location(**kwargs)
    assert "\n" not in str(caught.value)


def test_location_without_a_peering_and_with_a_broken_file(tmp_path: Path) -> None:
    from dagster_airpeer import AirflowConfigError

    (tmp_path / "empty.py").write_text("x = 1\n")
    with pytest.raises(AirflowConfigError, match="does not call build_defs_from_airflow_instance"):
        load_location(defs_file=tmp_path / "empty.py")
    (tmp_path / "broken.py").write_text("raise ValueError('bad setting FOO')\n")
    with pytest.raises(AirflowConfigError, match=r"importing .* failed: ValueError: bad setting FOO"):
        load_location(defs_file=tmp_path / "broken.py")
