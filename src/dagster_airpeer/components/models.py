"""The sections of `AirflowInstanceComponent`'s YAML: auth, DAG selection, translation, sensor settings.

Each section is a pydantic model and a Dagster `Resolvable`. Dagster first checks the YAML against a schema it
derives from these models, in which every field also accepts a string, so that `{{ env.X }}` templates pass;
the templates are then rendered and the model itself is validated, with the checks below. Their messages name
the field, as pydantic locates each error at its field. The checks are field validators rather than `Field(ge=...)`
constraints on purpose: Dagster copies constraints onto its derived schema, where they would also be applied to
the template string and fail with an error that names nothing.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Literal

import dagster as dg
from pydantic import ConfigDict, Field, field_validator, model_validator

from ..airflow.auth import AirflowAuthBackend, AirflowBasicAuthBackend, AirflowTokenAuthBackend
from ..airflow.models import Dag
from ..sensor import SensorSettings
from ..translator import DagsterAirflowTranslator

_DAGSTER_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_TAG_KEY = re.compile(r"^[A-Za-z0-9_.\-/]{1,63}$")
_TAG_VALUE = re.compile(r"^[A-Za-z0-9_.\-]{0,63}$")

AuthType = Literal["basic", "token", "mwaa", "composer"]

#: The fields each auth type needs, and the ones it may have besides `type`.
_AUTH_REQUIRED: dict[str, tuple[str, ...]] = {
    "basic": ("webserver_url", "username", "password"),
    "token": ("webserver_url", "token"),
    "mwaa": ("environment_name",),
    "composer": ("webserver_url",),
}
_AUTH_FIELDS = ("webserver_url", "username", "password", "token", "environment_name", "region_name", "scopes")
_AUTH_ALLOWED: dict[str, tuple[str, ...]] = {
    "basic": ("webserver_url", "username", "password"),
    "token": ("webserver_url", "token"),
    "mwaa": ("environment_name", "webserver_url", "region_name"),
    "composer": ("webserver_url", "scopes"),
}


class AirflowAuthModel(dg.Resolvable, dg.Model):
    """How to log in to Airflow. Give secrets as `{{ env.AIRFLOW_PASSWORD }}`, never in the file itself.

    - `type: basic`: `webserver_url`, `username`, `password` (Airflow 2 and 3).
    - `type: token`: `webserver_url`, `token`, a fixed bearer token.
    - `type: mwaa`: `environment_name`, optional `webserver_url` and `region_name` (Amazon MWAA, needs the
      `mwaa` extra).
    - `type: composer`: `webserver_url`, optional `scopes` (Google Cloud Composer, needs the `composer` extra).
    """

    # Never echo a password or a token back in a validation error.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    type: AuthType = Field(description="basic, token, mwaa or composer.")
    webserver_url: str | None = Field(
        default=None, description="Airflow's base URL, such as http://localhost:8080."
    )
    username: str | None = Field(default=None, description="type: basic.")
    password: str | None = Field(default=None, repr=False, description="type: basic; use {{ env.X }}.")
    token: str | None = Field(default=None, repr=False, description="type: token; use {{ env.X }}.")
    environment_name: str | None = Field(default=None, description="type: mwaa, the MWAA environment.")
    region_name: str | None = Field(default=None, description="type: mwaa, the AWS region.")
    scopes: list[str] | None = Field(default=None, description="type: composer, the OAuth scopes.")

    @field_validator("webserver_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
        return value.rstrip("/") if value is not None else None

    @model_validator(mode="after")
    def _fields_of_type(self) -> AirflowAuthModel:
        missing = [name for name in _AUTH_REQUIRED[self.type] if not getattr(self, name)]
        if missing:
            raise ValueError(
                f"auth type '{self.type}' needs {', '.join(f'`{m}`' for m in missing)} "
                f"(set {'it' if len(missing) == 1 else 'them'}, e.g. with {{{{ env.AIRFLOW_... }}}})"
            )
        extra = [
            name
            for name in _AUTH_FIELDS
            if getattr(self, name) is not None and name not in _AUTH_ALLOWED[self.type]
        ]
        if extra:
            raise ValueError(
                f"auth type '{self.type}' does not take {', '.join(f'`{e}`' for e in extra)}; it takes "
                f"{', '.join(f'`{a}`' for a in _AUTH_ALLOWED[self.type])}"
            )
        return self

    def build_backend(self, webserver_url: str | None = None) -> AirflowAuthBackend:
        """The auth backend these settings describe.

        `webserver_url` is used when the settings give none (MWAA), so that loading from a snapshot, which
        knows the URL, does not ask AWS for it.
        """
        url = self.webserver_url or webserver_url
        if self.type == "basic":
            assert url and self.username and self.password  # checked by _fields_of_type
            return AirflowBasicAuthBackend(url, self.username, self.password)
        if self.type == "token":
            assert url and self.token
            return AirflowTokenAuthBackend(url, self.token)
        if self.type == "mwaa":
            from ..airflow.managed import AirflowMwaaAuthBackend

            assert self.environment_name
            return AirflowMwaaAuthBackend(self.environment_name, url, region_name=self.region_name)
        from ..airflow.managed import AirflowComposerAuthBackend

        assert url
        if self.scopes is not None:
            return AirflowComposerAuthBackend(url, scopes=self.scopes)
        return AirflowComposerAuthBackend(url)


class DagSelectionModel(dg.Resolvable, dg.Model):
    """Which DAGs become assets. Empty: every DAG.

    A DAG is kept when its id is among `ids` or matches one of the glob `patterns` (when either is given), and
    it has at least one of `tags` (when given), and its id matches none of `exclude`.
    """

    ids: list[str] = Field(default_factory=list, description="DAG ids to keep.")
    patterns: list[str] = Field(default_factory=list, description="Glob patterns of DAG ids, such as etl_*.")
    tags: list[str] = Field(default_factory=list, description="Keep DAGs with at least one of these tags.")
    exclude: list[str] = Field(default_factory=list, description="Glob patterns of DAG ids to drop.")

    @field_validator("ids", "patterns", "tags", "exclude")
    @classmethod
    def _non_empty(cls, values: list[str]) -> list[str]:
        for value in values:
            if not value.strip():
                raise ValueError("entries must be non-empty strings")
        return values

    @property
    def selects_all(self) -> bool:
        return not (self.ids or self.patterns or self.tags or self.exclude)

    def matches(self, dag: Dag) -> bool:
        """Whether `dag` is selected."""
        dag_id = dag.dag_id
        if (self.ids or self.patterns) and not (
            dag_id in self.ids or any(fnmatch.fnmatchcase(dag_id, p) for p in self.patterns)
        ):
            return False
        if self.tags and not set(self.tags) & set(dag.tags):
            return False
        return not any(fnmatch.fnmatchcase(dag_id, p) for p in self.exclude)


class TranslationModel(dg.Resolvable, dg.Model):
    """How DAG assets are named and labelled, on top of the default translator."""

    key_prefix: list[str] | str = Field(
        default_factory=list,
        description="Prepended to each DAG asset's key ([instance, 'dag', dag_id]): a list, or 'a/b'.",
    )
    group: str | None = Field(default=None, description="The asset group of every DAG asset.")
    tags: dict[str, str] = Field(default_factory=dict, description="Tags added to every DAG asset.")

    @field_validator("key_prefix")
    @classmethod
    def _key_parts(cls, value: list[str] | str) -> list[str]:
        parts = [p for p in value.split("/") if p] if isinstance(value, str) else list(value)
        for part in parts:
            if not part.strip():
                raise ValueError("key parts must be non-empty strings")
        return parts

    @field_validator("group")
    @classmethod
    def _group_name(cls, value: str | None) -> str | None:
        if value is not None and not _DAGSTER_NAME.match(value):
            raise ValueError(f"must be letters, digits and underscores only, got {value!r}")
        return value

    @field_validator("tags")
    @classmethod
    def _tag_pairs(cls, value: dict[str, str]) -> dict[str, str]:
        for key, tag_value in value.items():
            if not _TAG_KEY.match(key):
                raise ValueError(f"tag key {key!r} must be 1-63 letters, digits, '_', '-', '.' or '/'")
            if not _TAG_VALUE.match(str(tag_value)):
                raise ValueError(
                    f"tag value {tag_value!r} (of {key!r}) must be up to 63 letters, digits, '_', '-', '.'"
                )
        return {key: str(tag_value) for key, tag_value in value.items()}

    def translator(self) -> DagsterAirflowTranslator:
        """The default translator with these settings applied."""
        return _SettingsTranslator(tuple(self.key_prefix), self.group, dict(self.tags))


class _SettingsTranslator(DagsterAirflowTranslator):
    def __init__(self, key_prefix: Sequence[str], group: str | None, tags: Mapping[str, str]) -> None:
        self._key_prefix = list(key_prefix)
        self._group = group
        self._tags = dict(tags)

    def get_asset_key(self, instance_name: str, dag: Dag) -> dg.AssetKey:
        return dg.AssetKey([*self._key_prefix, *super().get_asset_key(instance_name, dag).path])

    def get_group_name(self, dag: Dag) -> str | None:
        return self._group if self._group is not None else super().get_group_name(dag)

    def get_tags(self, dag: Dag) -> Mapping[str, str]:
        return {**super().get_tags(dag), **self._tags}


class SensorModel(dg.Resolvable, dg.Model):
    """The sensor's settings (see `build_defs_from_airflow_instance` for each)."""

    minimum_interval_seconds: int = Field(default=30, description="How often the sensor polls Airflow.")
    default_status: Literal["running", "stopped"] = Field(
        default="running", description="running (peering needs the sensor) or stopped."
    )
    lookback_seconds: float = Field(default=86400.0, description="History the first tick imports.")
    late_commit_window_seconds: float = Field(
        default=300.0, description="How long after its end a run may still appear in Airflow."
    )
    tick_time_budget_seconds: float = Field(default=8.0, description="A tick stops reading after this long.")
    max_runs_per_tick: int = Field(default=5000, description="A tick stops after this many runs.")
    max_parallel_requests: int = Field(default=4, description="Requests a tick sends at once (1-32).")

    @field_validator("minimum_interval_seconds", "max_runs_per_tick")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be >= 1, got {value}")
        return value

    @field_validator("max_parallel_requests")
    @classmethod
    def _parallel(cls, value: int) -> int:
        if not 1 <= value <= 32:
            raise ValueError(f"must be in [1, 32], got {value}")
        return value

    @field_validator("lookback_seconds")
    @classmethod
    def _non_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError(f"must be >= 0, got {value}")
        return value

    @field_validator("late_commit_window_seconds", "tick_time_budget_seconds")
    @classmethod
    def _positive(cls, value: float) -> float:
        if not value > 0:
            raise ValueError(f"must be > 0, got {value}")
        return value

    @model_validator(mode="after")
    def _settings_agree(self) -> SensorModel:
        # The checks that relate several settings, and Dagster's sensor timeout, are SensorSettings' own; their
        # messages name the Python arguments, so say which YAML fields they are.
        try:
            self.settings()
        except (TypeError, ValueError) as exc:
            message = str(exc).replace("sensor_minimum_interval_seconds", "minimum_interval_seconds")
            for name in ("late_commit_window", "lookback"):
                message = re.sub(rf"\b{name}\b(?!_seconds)", f"{name}_seconds", message)
            raise ValueError(message) from None
        return self

    def settings(self) -> SensorSettings:
        """The `SensorSettings` these fields describe."""
        return SensorSettings(
            minimum_interval_seconds=self.minimum_interval_seconds,
            default_status=(
                dg.DefaultSensorStatus.RUNNING
                if self.default_status == "running"
                else dg.DefaultSensorStatus.STOPPED
            ),
            lookback=timedelta(seconds=self.lookback_seconds),
            late_commit_window=timedelta(seconds=self.late_commit_window_seconds),
            tick_time_budget_seconds=self.tick_time_budget_seconds,
            max_runs_per_tick=self.max_runs_per_tick,
            max_parallel_requests=self.max_parallel_requests,
        )
