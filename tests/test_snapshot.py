"""The stored snapshot: a write that fails never fails a load, a stored file that cannot be used is named.

Tests run as root here, where a chmod'ed directory does not stop a write: unwritable and unreadable places are
made with paths that fail for root too (a directory below a regular file, a directory where the file should
be); only PermissionError itself is simulated, by monkeypatching the read.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest

from dagster_airpeer import (
    AirflowAuthError,
    AirflowBasicAuthBackend,
    AirflowConnectionError,
    AirflowInstance,
    AirflowTokenAuthBackend,
    Dag,
    SnapshotUnavailableError,
    build_defs_from_airflow_instance,
)
from dagster_airpeer.sensor import sensor_name
from dagster_airpeer.snapshot import (
    SNAPSHOT_FORMAT,
    AirflowSnapshot,
    load_snapshot,
    read_snapshot,
    snapshot_path,
)

URL = "http://airflow.test:8080"
HEALTH_V2 = {"metadatabase": {"status": "healthy"}, "scheduler": {"status": "healthy"}}


def _up_instance() -> AirflowInstance:
    """An Airflow 3 that is up, listing two DAGs (a MockTransport: the case here is the local disk)."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v2/monitor/health":
            return httpx.Response(200, json=HEALTH_V2)
        if request.url.path == "/api/v2/dags":
            dags = [{"dag_id": d, "is_paused": False, "is_stale": False, "tags": []} for d in ("a", "b")]
            return httpx.Response(200, json={"dags": dags, "total_entries": 2})
        return httpx.Response(404, json={"detail": "no route"})

    return AirflowInstance(
        AirflowTokenAuthBackend(URL, "t0ken"), name="inst", transport=httpx.MockTransport(handler)
    )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def down() -> Iterator[AirflowInstance]:
    url = f"http://127.0.0.1:{_closed_port()}"
    with AirflowInstance(AirflowBasicAuthBackend(url, "admin", "pw"), name="inst", max_retries=0) as instance:
        yield instance


def _snapshot(instance: AirflowInstance, api_version: str = "v2") -> AirflowSnapshot:
    return AirflowSnapshot(
        instance_name=instance.name,
        webserver_url=instance.webserver_url,
        api_version=api_version,
        fetched_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
        dags=(Dag(dag_id="stored"),),
    )


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# -- writing ------------------------------------------------------------------------------------------------


def test_an_unwritable_snapshot_dir_is_a_warning_not_a_failed_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A directory below a regular file cannot be created, not even by root (NotADirectoryError).
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    snapshot_dir = blocker / "airpeer"
    with caplog.at_level(logging.WARNING):
        snapshot = load_snapshot(_up_instance(), snapshot_dir)
    assert [d.dag_id for d in snapshot.dags] == ["a", "b"]
    [warning] = [w for w in _warnings(caplog) if "cannot store the snapshot" in w]
    assert str(snapshot_path(snapshot_dir, "inst")) in warning and "snapshot_dir" in warning
    assert "t0ken" not in warning


def test_a_write_failing_on_a_full_disk_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(path: Path, text: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("dagster_airpeer.snapshot.write_atomically", full)
    with caplog.at_level(logging.WARNING):
        snapshot = load_snapshot(_up_instance(), tmp_path)
    assert len(snapshot.dags) == 2
    assert any("No space left on device" in w and str(tmp_path) in w for w in _warnings(caplog))


def test_a_good_snapshot_is_stored_and_read_back(tmp_path: Path) -> None:
    fresh = load_snapshot(_up_instance(), tmp_path)
    assert read_snapshot(snapshot_path(tmp_path, "inst")) == fresh
    assert json.loads(snapshot_path(tmp_path, "inst").read_text())["format"] == SNAPSHOT_FORMAT


# -- reading ------------------------------------------------------------------------------------------------


def _unusable(kind: str, path: Path, instance: AirflowInstance, monkeypatch: pytest.MonkeyPatch) -> str:
    """Put an unusable snapshot of `kind` at `path`; returns what the message must say."""
    good = json.loads(_snapshot(instance).model_dump_json())
    if kind == "directory":
        path.mkdir(parents=True)
        return "IsADirectoryError"
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "permission":
        path.write_text(json.dumps(good))
        real = Path.read_text

        def refuse(self: Path, *args: Any, **kwargs: Any) -> str:
            if self == path:
                raise PermissionError(13, "Permission denied", str(self))
            return real(self, *args, **kwargs)

        # Root reads a chmod 000 file anyway: simulate the refusal a non-root code server gets.
        monkeypatch.setattr(Path, "read_text", refuse)
        return "PermissionError"
    if kind == "bad-json":
        path.write_text('{"format": 1, "dags": [')
        return "not valid JSON"
    if kind == "not-utf8":
        path.write_bytes(b"\xff\xfe{}")
        return "not UTF-8"
    if kind == "invalid":
        del good["dags"]
        path.write_text(json.dumps(good))
        return "dags"
    if kind == "future-format":
        good["format"] = 99
        path.write_text(json.dumps(good))
        return f"format 99, this airpeer reads format {SNAPSHOT_FORMAT}"
    if kind == "no-format":
        del good["format"]
        path.write_text(json.dumps(good))
        return f"format None, this airpeer reads format {SNAPSHOT_FORMAT}"
    raise AssertionError(kind)


KINDS = ["directory", "permission", "bad-json", "not-utf8", "invalid", "future-format", "no-format"]


@pytest.mark.parametrize("kind", KINDS)
def test_an_unusable_snapshot_is_ignored_with_a_warning_naming_it(
    kind: str, tmp_path: Path, down: AirflowInstance, caplog: pytest.LogCaptureFixture, monkeypatch: Any
) -> None:
    path = snapshot_path(tmp_path, down.name)
    expected = _unusable(kind, path, down, monkeypatch)
    with caplog.at_level(logging.WARNING):
        assert read_snapshot(path) is None
    [warning] = [w for w in _warnings(caplog) if "ignoring the snapshot" in w]
    assert str(path) in warning and expected in warning


@pytest.mark.parametrize("kind", KINDS)
def test_a_load_while_airflow_is_down_says_why_the_snapshot_cannot_be_used(
    kind: str, tmp_path: Path, down: AirflowInstance, monkeypatch: Any
) -> None:
    path = snapshot_path(tmp_path, down.name)
    expected = _unusable(kind, path, down, monkeypatch)
    with pytest.raises(SnapshotUnavailableError) as info:
        load_snapshot(down, tmp_path)
    message = str(info.value)
    assert f"The earlier snapshot at {path} cannot be used" in message and expected in message
    assert "Start Airflow" in message


def test_a_snapshot_below_a_regular_file_is_named(tmp_path: Path, down: AirflowInstance) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SnapshotUnavailableError, match="NotADirectoryError"):
        load_snapshot(down, blocker)


def test_a_snapshot_of_another_url_is_not_served(tmp_path: Path, down: AirflowInstance) -> None:
    other = _snapshot(down).model_copy(update={"webserver_url": "http://elsewhere:8080"})
    snapshot_path(tmp_path, down.name).write_text(other.model_dump_json())
    with pytest.raises(SnapshotUnavailableError, match="another Airflow"):
        load_snapshot(down, tmp_path)


def test_a_good_snapshot_is_served_while_airflow_is_down(tmp_path: Path, down: AirflowInstance) -> None:
    snapshot_path(tmp_path, down.name).write_text(_snapshot(down).model_dump_json())
    assert [d.dag_id for d in load_snapshot(down, tmp_path).dags] == ["stored"]


@pytest.mark.timeout(600)
def test_real_airflow_loads_with_an_unwritable_snapshot_dir(
    airflow: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "read-only-home"
    blocker.write_text("")
    backend = AirflowBasicAuthBackend(airflow.url, airflow.username, airflow.password)
    with AirflowInstance(backend, name="ro_home") as instance, caplog.at_level(logging.WARNING):
        snapshot = load_snapshot(instance, blocker / "airpeer")
    assert "airpeer_ok" in {d.dag_id for d in snapshot.dags}
    assert any("cannot store the snapshot" in w for w in _warnings(caplog))


# -- the API version of a stored snapshot -------------------------------------------------------------------


def test_ticks_during_an_outage_ask_the_stored_snapshots_version(
    tmp_path: Path, down: AirflowInstance
) -> None:
    # An Airflow 2.11 peered before, down now; the code location (re)loads from the stored snapshot.
    snapshot_path(tmp_path, down.name).write_text(_snapshot(down, api_version="v1").model_dump_json())
    defs = build_defs_from_airflow_instance(airflow_instance=down, snapshot_dir=tmp_path)
    sensor = defs.get_sensor_def(sensor_name(down.name))
    with dg.instance_for_test() as instance, pytest.raises(AirflowConnectionError) as info:
        sensor(dg.build_sensor_context(instance=instance, definitions=defs))
    message = str(info.value)
    assert f"POST {down.webserver_url}/api/v1/dags/~/dagRuns/list" in message
    assert "/api/v2/monitor" not in message


def test_a_given_api_version_is_not_replaced_by_the_snapshots(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    backend = AirflowBasicAuthBackend(url, "admin", "pw")
    with AirflowInstance(backend, name="inst", max_retries=0, api_version="v2") as instance:
        snapshot_path(tmp_path, instance.name).write_text(_snapshot(instance, "v1").model_dump_json())
        load_snapshot(instance, tmp_path)
        assert instance.api_version == "v2"


def test_refused_credentials_behind_an_auth_proxy_never_serve_a_stale_snapshot(tmp_path: Path) -> None:
    def proxy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, text="<html>401 Authorization Required</html>")

    instance = AirflowInstance(
        AirflowTokenAuthBackend(URL, "expired-t0ken"), name="inst", transport=httpx.MockTransport(proxy)
    )
    snapshot_path(tmp_path, instance.name).write_text(_snapshot(instance).model_dump_json())
    with pytest.raises(AirflowAuthError, match="refused the credentials") as info:
        load_snapshot(instance, tmp_path)
    assert "expired-t0ken" not in str(info.value)
