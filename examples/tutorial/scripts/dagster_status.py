"""What the Dagster webserver of the tutorial shows, through its GraphQL API (plus launching a job).

Used by ``run_dag.py`` (to tell the user when Dagster has recorded the Airflow run), ``demo.py`` (to know when
the code location is loaded and the sensor running) and the tutorial's tests. Only public GraphQL fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

_METADATA_FIELDS = """
    label
    __typename
    ... on TextMetadataEntry { text }
    ... on UrlMetadataEntry { url }
    ... on PathMetadataEntry { path }
    ... on IntMetadataEntry { intValue }
    ... on FloatMetadataEntry { floatValue }
    ... on BoolMetadataEntry { boolValue }
    ... on TimestampMetadataEntry { timestamp }
    ... on JsonMetadataEntry { jsonString }
    ... on MarkdownMetadataEntry { mdStr }
"""

_WORKSPACE = """
query Workspace {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on PythonError { message }
          ... on RepositoryLocation {
            repositories {
              name
              sensors { name sensorState { status } }
              assetNodes { assetKey { path } }
            }
          }
        }
      }
    }
    ... on PythonError { message }
  }
}
"""

_MATERIALIZATIONS = f"""
query Materializations($assetKey: AssetKeyInput!, $limit: Int!) {{
  assetOrError(assetKey: $assetKey) {{
    __typename
    ... on Asset {{
      assetMaterializations(limit: $limit) {{
        runId
        timestamp
        metadataEntries {{ {_METADATA_FIELDS} }}
      }}
    }}
  }}
}}
"""

_CHECK_EXECUTIONS = f"""
query CheckExecutions($assetKey: AssetKeyInput!, $checkName: String!, $limit: Int!) {{
  assetCheckExecutions(assetKey: $assetKey, checkName: $checkName, limit: $limit) {{
    runId
    status
    timestamp
    evaluation {{
      success
      severity
      timestamp
      description
      metadataEntries {{ {_METADATA_FIELDS} }}
    }}
  }}
}}
"""


_SENSOR_TICKS = """
query SensorTicks($selector: SensorSelector!, $limit: Int!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status ticks(limit: $limit) { status timestamp runIds } } }
    ... on PythonError { message }
    ... on SensorNotFoundError { message }
  }
}
"""

_LAUNCH_RUN = """
mutation LaunchRun($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on PipelineNotFoundError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on UnauthorizedError { message }
  }
}
"""

_RUN_STATUS = """
query RunStatus($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status }
    ... on RunNotFoundError { message }
    ... on PythonError { message }
  }
}
"""

_CHECK_NAMES = """
query CheckNames($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    __typename
    ... on AssetNode { assetChecksOrError { __typename ... on AssetChecks { checks { name } } } }
  }
}
"""

#: Dagster's name for the repository of a code location loaded from a bare Definitions object.
DEFAULT_REPOSITORY = "__repository__"
#: The job Dagster builds over every asset and check of a location; the UI runs selections of it.
IMPLICIT_ASSET_JOB = "__ASSET_JOB"


def _metadata_value(entry: dict[str, Any]) -> Any:
    """The one value field of a GraphQL metadata entry (None for kinds the queries do not ask about)."""
    for key in (
        "text",
        "url",
        "path",
        "intValue",
        "floatValue",
        "boolValue",
        "timestamp",
        "jsonString",
        "mdStr",
    ):
        if key in entry:
            return entry[key]
    return None


def _metadata(entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {entry["label"]: _metadata_value(entry) for entry in entries}


@dataclass(frozen=True)
class Materialization:
    """One materialization event of an asset."""

    dagster_run_id: str
    timestamp_ms: float
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def airflow_run_id(self) -> str | None:
        """The Airflow run the event stands for (airpeer's ``airflow/run_id`` metadata)."""
        value = self.metadata.get("airflow/run_id")
        return str(value) if value is not None else None


@dataclass(frozen=True)
class CheckExecution:
    """One execution of an asset check; ``passed``/``severity`` are None while it has no evaluation yet."""

    dagster_run_id: str
    status: str
    passed: bool | None
    severity: str | None
    description: str | None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def airflow_run_id(self) -> str | None:
        """The Airflow run an ``airflow_run_status`` evaluation is about, when airpeer says so."""
        value = self.metadata.get("airflow/run_id")
        return str(value) if value is not None else None


@dataclass(frozen=True)
class SensorTick:
    """One evaluation of a sensor."""

    status: str
    timestamp: float
    dagster_run_ids: list[str]


@dataclass(frozen=True)
class LocationStatus:
    """The state of one code location of the webserver's workspace."""

    name: str
    load_status: str
    error: str | None
    sensors: dict[str, str]
    asset_keys: list[list[str]]


class DagsterStatus:
    """A small read-only client of a Dagster webserver's GraphQL endpoint."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.graphql_url = base_url.rstrip("/") + "/graphql"
        self._client = httpx.Client(timeout=timeout)

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self._client.close()

    def __enter__(self) -> DagsterStatus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def query(self, document: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run one GraphQL query; raise on transport or GraphQL errors."""
        response = self._client.post(self.graphql_url, json={"query": document, "variables": variables or {}})
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise RuntimeError(f"GraphQL errors: {body['errors']}")
        data: dict[str, Any] = body["data"]
        return data

    def locations(self) -> list[LocationStatus]:
        """The workspace's code locations, with their sensors' status and their asset keys."""
        workspace = self.query(_WORKSPACE)["workspaceOrError"]
        if workspace["__typename"] != "Workspace":
            raise RuntimeError(f"workspace error: {workspace.get('message')}")
        statuses = []
        for entry in workspace["locationEntries"]:
            location = entry.get("locationOrLoadError") or {}
            sensors: dict[str, str] = {}
            asset_keys: list[list[str]] = []
            for repository in location.get("repositories", []):
                sensors.update({s["name"]: s["sensorState"]["status"] for s in repository["sensors"]})
                asset_keys.extend(node["assetKey"]["path"] for node in repository["assetNodes"])
            error = location.get("message") if location.get("__typename") == "PythonError" else None
            statuses.append(LocationStatus(entry["name"], entry["loadStatus"], error, sensors, asset_keys))
        return statuses

    def materializations(self, asset_key: Sequence[str], limit: int = 50) -> list[Materialization]:
        """The asset's materializations, newest first (empty if the asset has none or is unknown)."""
        data = self.query(_MATERIALIZATIONS, {"assetKey": {"path": list(asset_key)}, "limit": limit})
        asset = data["assetOrError"]
        if asset["__typename"] != "Asset":
            return []
        return [
            Materialization(m["runId"], float(m["timestamp"]), _metadata(m["metadataEntries"]))
            for m in asset["assetMaterializations"]
        ]

    def check_executions(
        self, asset_key: Sequence[str], check_name: str, limit: int = 50
    ) -> list[CheckExecution]:
        """The check's executions, newest first."""
        data = self.query(
            _CHECK_EXECUTIONS,
            {"assetKey": {"path": list(asset_key)}, "checkName": check_name, "limit": limit},
        )
        executions = []
        for execution in data["assetCheckExecutions"]:
            evaluation = execution.get("evaluation")
            executions.append(
                CheckExecution(
                    dagster_run_id=execution["runId"],
                    status=execution["status"],
                    passed=evaluation["success"] if evaluation else None,
                    severity=evaluation["severity"] if evaluation else None,
                    description=evaluation.get("description") if evaluation else None,
                    metadata=_metadata(evaluation["metadataEntries"]) if evaluation else {},
                )
            )
        return executions

    def check_names(self, asset_key: Sequence[str]) -> list[str]:
        """The names of the asset checks defined on the asset (empty if the asset is unknown)."""
        node = self.query(_CHECK_NAMES, {"assetKey": {"path": list(asset_key)}})["assetNodeOrError"]
        checks = node.get("assetChecksOrError") or {}
        return [check["name"] for check in checks.get("checks", [])]

    def sensor_ticks(self, location: str, sensor: str, limit: int = 50) -> list[SensorTick]:
        """The sensor's latest ticks, newest first."""
        selector = {
            "repositoryLocationName": location,
            "repositoryName": DEFAULT_REPOSITORY,
            "sensorName": sensor,
        }
        data = self.query(_SENSOR_TICKS, {"selector": selector, "limit": limit})["sensorOrError"]
        if data["__typename"] != "Sensor":
            raise RuntimeError(f"sensor {sensor!r}: {data.get('message', data['__typename'])}")
        return [
            SensorTick(tick["status"], float(tick["timestamp"]), list(tick["runIds"]))
            for tick in data["sensorState"]["ticks"]
        ]

    def execute_checks(self, location: str, asset_key: Sequence[str], check_names: Sequence[str]) -> str:
        """Run asset checks alone, as their Execute button in the UI does; return the Dagster run id."""
        selection = [{"assetKey": {"path": list(asset_key)}, "name": name} for name in check_names]
        return self._launch(
            {
                "repositoryLocationName": location,
                "repositoryName": DEFAULT_REPOSITORY,
                "jobName": IMPLICIT_ASSET_JOB,
                "assetSelection": [],
                "assetCheckSelection": selection,
            }
        )

    def launch_job(self, location: str, job: str) -> str:
        """Launch a run of a job of the location (as the UI's Launch button does); return its run id."""
        return self._launch(
            {"repositoryLocationName": location, "repositoryName": DEFAULT_REPOSITORY, "jobName": job}
        )

    def _launch(self, selector: dict[str, Any]) -> str:
        params = {"selector": selector, "runConfigData": {}}
        result = self.query(_LAUNCH_RUN, {"params": params})["launchRun"]
        if result["__typename"] != "LaunchRunSuccess":
            raise RuntimeError(f"launching {selector['jobName']!r} failed: {result}")
        run_id: str = result["run"]["runId"]
        return run_id

    def run_status(self, run_id: str) -> str:
        """The status of a Dagster run (QUEUED, STARTED, SUCCESS, FAILURE, ...)."""
        data = self.query(_RUN_STATUS, {"runId": run_id})["runOrError"]
        if data["__typename"] != "Run":
            raise RuntimeError(f"run {run_id}: {data.get('message', data['__typename'])}")
        status: str = data["status"]
        return status
