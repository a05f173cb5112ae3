"""The YAML of AirflowInstanceComponent: good attributes resolve; bad ones fail with an error naming the field."""

from __future__ import annotations

import textwrap

import dagster as dg
import pytest

from dagster_airpeer import AirflowInstanceComponent, Dag
from dagster_airpeer.airflow.auth import AirflowBasicAuthBackend, AirflowTokenAuthBackend

_AUTH = """\
auth:
  type: basic
  webserver_url: http://127.0.0.1:8080
  username: admin
  password: "{{ env.AIRPEER_TEST_PASSWORD }}"
"""


def _resolve(body: str) -> AirflowInstanceComponent:
    return AirflowInstanceComponent.resolve_from_yaml(textwrap.dedent(body))


def _error(body: str) -> str:
    with pytest.raises(Exception) as excinfo:
        _resolve(body)
    return str(excinfo.value)


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRPEER_TEST_PASSWORD", "hunter2-secret")
    monkeypatch.setenv("AIRPEER_TEST_INTERVAL", "45")
    monkeypatch.setenv("AIRPEER_TEST_WORD", "many")


def test_full_yaml_resolves_with_env_templates() -> None:
    component = _resolve(
        "name: af_one\n"
        + _AUTH
        + """\
dags:
  ids: [keep_me]
  patterns: ["etl_*"]
  tags: [finance]
  exclude: ["etl_old_*"]
translation:
  key_prefix: airflow/prod
  group: airflow
  tags: {team: data}
task_mappings:
  - dag_id: etl_customers
    tasks:
      load: [{key: raw/customers}]
dag_mappings:
  etl_orders: [{key: orders_report}]
sensor:
  minimum_interval_seconds: "{{ env.AIRPEER_TEST_INTERVAL }}"
  default_status: stopped
  lookback_seconds: 3600
defs_state:
  management_type: VERSIONED_STATE_STORAGE
"""
    )
    assert component.name == "af_one"
    backend = component.auth.build_backend()
    assert isinstance(backend, AirflowBasicAuthBackend) and backend.username == "admin"
    assert "hunter2" not in repr(component)
    settings = component.sensor.settings()
    assert settings.minimum_interval_seconds == 45
    assert settings.default_status == dg.DefaultSensorStatus.STOPPED
    assert settings.lookback.total_seconds() == 3600
    assert component.defs_state_config.key == "AirflowInstanceComponent[af_one]"
    assert component.defs_state_config.management_type.value == "VERSIONED_STATE_STORAGE"

    matches = component.dags.matches
    assert matches(Dag(dag_id="keep_me", tags=("finance",)))
    assert matches(Dag(dag_id="etl_a", tags=("finance", "x")))
    assert not matches(Dag(dag_id="etl_a", tags=("x",)))  # no selected tag
    assert not matches(Dag(dag_id="other", tags=("finance",)))  # neither id nor pattern
    assert not matches(Dag(dag_id="etl_old_1", tags=("finance",)))  # excluded

    spec = component.get_translator().get_asset_spec(
        "af_one", Dag(dag_id="etl_a", tags=("t",)), dag_url="http://x"
    )
    assert spec.key == dg.AssetKey(["airflow", "prod", "af_one", "dag", "etl_a"])
    assert spec.group_name == "airflow"
    assert spec.tags["team"] == "data" and spec.tags["t"] == ""
    mapped = component._mapped_assets()
    assert {a.key for a in mapped if isinstance(a, dg.AssetSpec)} == {
        dg.AssetKey(["raw", "customers"]),
        dg.AssetKey("orders_report"),
    }


def test_token_auth() -> None:
    component = _resolve(
        "name: t\nauth: {type: token, webserver_url: 'https://af.example/', token: '{{ env.AIRPEER_TEST_PASSWORD }}'}\n"
    )
    backend = component.auth.build_backend()
    assert isinstance(backend, AirflowTokenAuthBackend)
    assert backend.webserver_url == "https://af.example"


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ("name: a\n" + _AUTH + "sensor: {minimum_interval_seconds: 0}\n", "minimum_interval_seconds"),
        ("name: a\n" + _AUTH + "sensor: {max_parallel_requests: 99}\n", "max_parallel_requests"),
        (
            "name: a\n" + _AUTH + "sensor: {max_runs_per_tick: '{{ env.AIRPEER_TEST_WORD }}'}\n",
            "max_runs_per_tick",
        ),
        ("name: a\n" + _AUTH + "sensor: {late_commit_window_seconds: 5}\n", "late_commit_window_seconds"),
        ("name: a\n" + _AUTH + "sensor: {default_status: paused}\n", "default_status"),
        ("name: a\n" + _AUTH + "sensor: {poll_every: 5}\n", "poll_every"),
        ("name: a\n" + _AUTH + "translation: {group: 'not a group'}\n", "group"),
        ("name: a\n" + _AUTH + "dags: {ids: ['']}\n", "ids"),
        ("name: a\nauth: {type: basic, webserver_url: 'http://h', username: u}\n", "password"),
        ("name: a\nauth: {type: token, webserver_url: 'http://h', token: x, username: u}\n", "username"),
        (
            "name: a\nauth: {type: basic, webserver_url: 'localhost:8080', username: u, password: p}\n",
            "webserver_url",
        ),
        ("name: a\nauth: {type: kerberos, webserver_url: 'http://h'}\n", "type"),
        ("name: a\nauth: {type: mwaa}\n", "environment_name"),
        ("name: 'not valid'\n" + _AUTH, "name"),
        (_AUTH, "name"),
    ],
)
def test_bad_yaml_names_the_field(body: str, named: str) -> None:
    message = _error(body)
    assert named in message
    assert "hunter2" not in message


def test_resolved_schema_lists_the_sections() -> None:
    fields = set(AirflowInstanceComponent.model().model_fields)
    assert {"name", "auth", "dags", "translation", "task_mappings", "sensor", "defs_state"} <= fields
