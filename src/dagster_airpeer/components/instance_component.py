"""`AirflowInstanceComponent`: peer an Airflow instance from a `defs.yaml`, with its snapshot as Dagster defs state.

Fetching Airflow's state and building definitions are two steps here. `write_state_to_path` fetches the
snapshot (the DAGs, and the task lists and sources the settings need) and writes it as the component's state:
`dg utils refresh-defs-state` calls it, and so does a code server at start-up with
`management_type: LEGACY_CODE_SERVER_SNAPSHOTS` (or `dagster dev` / `dg` while `refresh_if_dev` is true).
`build_defs_from_state` builds the definitions from that state alone, through the same builder as
`build_defs_from_airflow_instance`, so that a run worker loading the code location sends no request to Airflow.
"""

# No `from __future__ import annotations`: Dagster derives the YAML schema from the dataclass fields' types,
# which postponed annotations would turn into strings.
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
from dagster.components import (
    DefsStateConfig,
    DefsStateConfigArgs,
    ResolvedAssetSpec,
    ResolvedDefsStateConfig,
    Scaffolder,
    ScaffoldRequest,
    StateBackedComponent,
    scaffold_component,
    scaffold_with,
)
from pydantic import BaseModel

from ..airflow.errors import AirflowConfigError
from ..airflow.instance import AirflowInstance
from ..airflow.models import Dag
from ..definitions import build_defs_from_snapshot
from ..observe import assets_with_dag_mappings, assets_with_task_mappings
from ..observe.mapping import MappedAsset
from ..observe.tasks import task_lists_for
from ..snapshot import AirflowSnapshot, _read_snapshot, default_snapshot_dir, load_snapshot
from .models import AirflowAuthModel, DagSelectionModel, SensorModel, TranslationModel

_DAGSTER_NAME_CHARS = "letters, digits and underscores only"


@dataclass
class TaskMappingModel(dg.Resolvable):
    """The assets the tasks of one DAG build, as `assets_with_task_mappings(dag_id, task_mappings)`.

    ```yaml
    - dag_id: rebuild_customers_list
      tasks:
        load_raw_customers: [{key: raw_data/raw_customers}]
    ```
    """

    dag_id: str
    tasks: dict[str, Sequence[ResolvedAssetSpec]]

    def __post_init__(self) -> None:
        if not isinstance(self.dag_id, str) or not self.dag_id:
            raise ValueError(f"task_mappings: `dag_id` must be a non-empty string, got {self.dag_id!r}")
        for task_id in self.tasks:
            if not isinstance(task_id, str) or not task_id:
                raise ValueError(f"task_mappings: each key of `tasks` must be a task id, got {task_id!r}")


class _NameClaims:
    """The component names taken in each component tree (one tree per code-location load)."""

    #: Trees kept: Dagster's ComponentTree (a tuple) takes no weak reference, so the latest few are held, which
    #: also keeps their ids from being reused while they are listed. A code server loads one tree at a time.
    _KEEP = 8

    def __init__(self) -> None:
        self._by_tree: OrderedDict[int, tuple[object, dict[str, str]]] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, tree: object, name: str, where: str) -> None:
        with self._lock:
            entry = self._by_tree.get(id(tree))
            if entry is None or entry[0] is not tree:
                entry = (tree, {})
                self._by_tree[id(tree)] = entry
                while len(self._by_tree) > self._KEEP:
                    self._by_tree.popitem(last=False)
            names = entry[1]
            other = names.get(name)
            if other is not None and other != where:
                raise AirflowConfigError(
                    f"Two AirflowInstanceComponents in this code location are named '{name}' ({other} and "
                    f"{where}). Each instance's name must be unique: it names the instance's sensor, its cursor "
                    "and its asset keys. Give one of them another `name`."
                )
            names[name] = where


_CLAIMS = _NameClaims()


class AirflowInstanceComponentScaffoldParams(BaseModel):
    """`dg scaffold defs dagster_airpeer.AirflowInstanceComponent PATH [--name N] [--auth-type T]`."""

    name: str | None = None
    auth_type: str = "basic"


_SCAFFOLD_AUTH: dict[str, dict[str, str]] = {
    "basic": {
        "type": "basic",
        "webserver_url": "{{ env.AIRFLOW_WEBSERVER_URL }}",
        "username": "{{ env.AIRFLOW_USERNAME }}",
        "password": "{{ env.AIRFLOW_PASSWORD }}",
    },
    "token": {
        "type": "token",
        "webserver_url": "{{ env.AIRFLOW_WEBSERVER_URL }}",
        "token": "{{ env.AIRFLOW_TOKEN }}",
    },
    "mwaa": {"type": "mwaa", "environment_name": "{{ env.MWAA_ENVIRONMENT_NAME }}"},
    "composer": {"type": "composer", "webserver_url": "{{ env.AIRFLOW_WEBSERVER_URL }}"},
}


class AirflowInstanceComponentScaffolder(Scaffolder[AirflowInstanceComponentScaffoldParams]):
    """Writes a `defs.yaml` whose credentials come from environment variables."""

    @classmethod
    def get_scaffold_params(cls) -> type[AirflowInstanceComponentScaffoldParams]:
        return AirflowInstanceComponentScaffoldParams

    def scaffold(self, request: ScaffoldRequest[AirflowInstanceComponentScaffoldParams]) -> None:
        params = request.params
        if params.auth_type not in _SCAFFOLD_AUTH:
            raise AirflowConfigError(
                f"--auth-type must be one of {', '.join(_SCAFFOLD_AUTH)}, got {params.auth_type!r}"
            )
        name = (
            params.name or "".join(c if c.isalnum() else "_" for c in request.target_path.name) or "airflow"
        )
        scaffold_component(
            request,
            {
                "name": name,
                "auth": _SCAFFOLD_AUTH[params.auth_type],
                "defs_state": {"management_type": "LOCAL_FILESYSTEM"},
            },
        )


@scaffold_with(AirflowInstanceComponentScaffolder)
@dataclass
class AirflowInstanceComponent(StateBackedComponent, dg.Resolvable):
    """Peer one Airflow instance (2 or 3): one external asset per DAG and a sensor recording every run that ends.

    The same definitions as `build_defs_from_airflow_instance`, configured in YAML and built from a snapshot of
    Airflow kept as Dagster defs state. Refresh it with `dg utils refresh-defs-state` (the default
    `management_type: LOCAL_FILESYSTEM` keeps it in the project; `VERSIONED_STATE_STORAGE` in the instance's
    defs state storage; `LEGACY_CODE_SERVER_SNAPSHOTS` fetches it when the code server starts).

    ```yaml
    type: dagster_airpeer.AirflowInstanceComponent
    attributes:
      name: my_airflow
      auth:
        type: basic
        webserver_url: "{{ env.AIRFLOW_WEBSERVER_URL }}"
        username: "{{ env.AIRFLOW_USERNAME }}"
        password: "{{ env.AIRFLOW_PASSWORD }}"
      dags:
        patterns: ["etl_*"]
      translation:
        key_prefix: airflow
        group: airflow
      sensor:
        minimum_interval_seconds: 30
    ```

    Subclass it and override `build_airflow_instance` for another auth backend or HTTP settings, or
    `get_translator` for your own translator.
    """

    #: The instance's name: unique in the code location; it names the sensor, its cursor and the asset keys.
    name: str
    auth: AirflowAuthModel
    dags: DagSelectionModel = field(default_factory=DagSelectionModel)
    translation: TranslationModel = field(default_factory=TranslationModel)
    task_mappings: Sequence[TaskMappingModel] = ()
    #: DAG id -> assets materialized when a run of that DAG succeeds (`assets_with_dag_mappings`).
    dag_mappings: dict[str, Sequence[ResolvedAssetSpec]] = field(default_factory=dict)
    sensor: SensorModel = field(default_factory=SensorModel)
    show_dag_source: bool = False
    #: Where the last good snapshot is also kept (the fallback while Airflow is down); default $DAGSTER_HOME/airpeer.
    snapshot_dir: str | None = None
    timeout_seconds: float = 10.0
    max_retries: int = 3
    defs_state: ResolvedDefsStateConfig = field(default_factory=DefsStateConfigArgs.local_filesystem)

    def __post_init__(self) -> None:
        if (
            not isinstance(self.name, str)
            or not self.name
            or not all(c.isalnum() or c == "_" for c in self.name)
        ):
            raise ValueError(
                f"AirflowInstanceComponent `name` must be a valid Dagster name ({_DAGSTER_NAME_CHARS}, such as "
                f"'my_airflow'), got {self.name!r}"
            )
        if not self.name.isascii():
            raise ValueError(
                f"AirflowInstanceComponent `name` must be ASCII ({_DAGSTER_NAME_CHARS}), got {self.name!r}"
            )

    @classmethod
    def load(
        cls, attributes: BaseModel | None, context: dg.ComponentLoadContext
    ) -> "AirflowInstanceComponent":
        """Load from YAML, refusing a second instance of the same name in the code location."""
        component = super().load(attributes, context)
        _CLAIMS.claim(context.component_tree, component.name, str(context.path))
        return component

    @property
    def defs_state_config(self) -> DefsStateConfig:
        return DefsStateConfig.from_args(
            self.defs_state, default_key=f"AirflowInstanceComponent[{self.name}]"
        )

    # -- extension points ----------------------------------------------------------------------------------

    def build_airflow_instance(self, webserver_url: str | None = None) -> AirflowInstance:
        """The `AirflowInstance` to talk to. `webserver_url` is the snapshot's, for auth settings without one.

        Building it sends no request (except MWAA without `webserver_url` and without a snapshot yet).
        """
        return AirflowInstance(
            auth_backend=self.auth.build_backend(webserver_url),
            name=self.name,
            timeout=self.timeout_seconds,
            max_retries=self.max_retries,
        )

    def get_translator(self) -> Any:
        """The `DagsterAirflowTranslator` of the DAG assets: the default one with `translation` applied."""
        return self.translation.translator()

    # -- state ---------------------------------------------------------------------------------------------

    def _snapshot_dir(self) -> Path:
        return Path(self.snapshot_dir) if self.snapshot_dir is not None else default_snapshot_dir()

    def _dag_selector(self) -> Any:
        return None if self.dags.selects_all else self.dags.matches

    def _mapped_assets(self) -> list[MappedAsset]:
        assets: list[MappedAsset] = []
        for mapping in self.task_mappings:
            assets += assets_with_task_mappings(
                mapping.dag_id, {task: list(specs) for task, specs in mapping.tasks.items()}
            )
        if self.dag_mappings:
            assets += assets_with_dag_mappings({dag: list(specs) for dag, specs in self.dag_mappings.items()})
        return assets

    def write_state_to_path(self, state_path: Path) -> None:
        """Fetch the snapshot of Airflow and write it to `state_path`.

        While Airflow is unreachable, the last good snapshot (kept in `snapshot_dir`) is written instead, with a
        warning, as `build_defs_from_airflow_instance` falls back on it; a refused login is raised.
        """
        instance = self.build_airflow_instance()
        directory = self._snapshot_dir()
        selector = self._dag_selector()
        sources_for = None
        if self.show_dag_source:
            from ..airflow.sources import DagSourceCache

            cache = DagSourceCache(directory / f"{instance.name}.sources.json")

            def sources_for(dags: Sequence[Dag]) -> dict[str, str]:
                return cache.get_sources(instance, [d for d in dags if selector is None or selector(d)])

        task_dag_ids = {mapping.dag_id for mapping in self.task_mappings}
        tasks_for = task_lists_for(instance, task_dag_ids) if task_dag_ids else None
        snapshot = load_snapshot(instance, directory, sources_for=sources_for, tasks_for=tasks_for)
        state_path.parent.mkdir(parents=True, exist_ok=True)
        state_path.write_text(snapshot.model_dump_json(), encoding="utf-8")

    def read_state(self, state_path: Path) -> AirflowSnapshot:
        """The snapshot stored at `state_path`; a clear error if it cannot be used."""
        snapshot, problem = _read_snapshot(state_path)
        if snapshot is None:
            raise AirflowConfigError(
                f"The defs state of AirflowInstanceComponent '{self.name}' at {state_path} cannot be used: "
                f"{problem or 'it is missing'} Run `dg utils refresh-defs-state` to fetch it again."
            )
        return snapshot

    def build_defs_from_state(
        self, context: dg.ComponentLoadContext, state_path: Path | None
    ) -> dg.Definitions:
        """The definitions from the stored snapshot alone: no request to Airflow."""
        if state_path is None or not state_path.exists():
            dg.get_dagster_logger().warning(
                f"airpeer: AirflowInstanceComponent '{self.name}' has no defs state yet, so it defines nothing. "
                f"Run `dg utils refresh-defs-state` (key {self.defs_state_config.key!r}) with Airflow reachable."
            )
            return dg.Definitions()
        snapshot = self.read_state(state_path)
        instance = self.build_airflow_instance(snapshot.webserver_url)
        if snapshot.webserver_url != instance.webserver_url:
            raise AirflowConfigError(
                f"The defs state of AirflowInstanceComponent '{self.name}' is of another Airflow "
                f"({snapshot.webserver_url}, not {instance.webserver_url}): run `dg utils refresh-defs-state`."
            )
        if snapshot.api_version in ("v1", "v2"):
            # Known from the snapshot: the sensor's first tick then needs no version probe either.
            instance.use_api_version(snapshot.api_version)
        mapped = self._mapped_assets()
        return build_defs_from_snapshot(
            airflow_instance=instance,
            snapshot=snapshot,
            settings=self.sensor.settings(),
            defs=dg.Definitions(assets=mapped) if mapped else None,
            dag_selector_fn=self._dag_selector(),
            translator=self.get_translator(),
        )
