"""The snapshot of Airflow that the code location's definitions are built from.

Definitions are built when the code location loads. A snapshot of Airflow's DAGs is fetched then, and the
last good one is kept on disk, so that a code location still loads (with a warning) while Airflow is down.
The snapshot holds only DAG metadata: never a credential.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
from pydantic import BaseModel, ConfigDict, ValidationError

from .airflow._files import write_atomically
from .airflow.assets import AirflowAsset
from .airflow.errors import AirflowConfigError, AirflowConnectionError, AirflowError, AirflowVersionError
from .airflow.instance import AirflowInstance
from .airflow.models import Dag, Task

SNAPSHOT_FORMAT = 1


class AirflowSnapshot(BaseModel):
    """What airpeer knew about one Airflow instance when the code location loaded."""

    model_config = ConfigDict(frozen=True)

    format: int = SNAPSHOT_FORMAT
    instance_name: str
    webserver_url: str
    api_version: str
    fetched_at: datetime
    dags: tuple[Dag, ...]
    #: DAG id -> source code, only when the definitions show DAG sources.
    sources: dict[str, str] = {}
    #: DAG id -> its tasks, only for DAGs with task mappings (observe), so mappings are checked while Airflow is down.
    tasks: dict[str, tuple[Task, ...]] = {}
    #: Airflow's datasets (2.x) / assets (3.x), only when the observe stage shows them.
    assets: tuple[AirflowAsset, ...] = ()


class SnapshotUnavailableError(AirflowError):
    """Airflow is unreachable at load time and no earlier snapshot exists."""


def default_snapshot_dir() -> Path:
    """``$DAGSTER_HOME/airpeer`` when DAGSTER_HOME is set, else ``~/.cache/dagster-airpeer``."""
    home = os.environ.get("DAGSTER_HOME")
    if home:
        return Path(home) / "airpeer"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dagster-airpeer"


def snapshot_path(snapshot_dir: Path, instance_name: str) -> Path:
    return snapshot_dir / f"{instance_name}.snapshot.json"


def read_snapshot(path: Path) -> AirflowSnapshot | None:
    """The stored snapshot, or None if there is none or it cannot be used (it is then ignored, with a log)."""
    snapshot, problem = _read_snapshot(path)
    if problem is not None:
        dg.get_dagster_logger().warning(f"airpeer: ignoring the snapshot {path}: {problem}")
    return snapshot


def _read_snapshot(path: Path) -> tuple[AirflowSnapshot | None, str | None]:
    """(the stored snapshot, None), (None, None) when there is no file, or (None, why it cannot be used)."""
    fix = "delete it or fix the file; the next load while Airflow is up writes a new one"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, None
    except UnicodeDecodeError:
        return None, f"it is not UTF-8 text; {fix}."
    except OSError as exc:
        # PermissionError, a directory in its place, a path under a regular file, an I/O error.
        return None, (
            f"it cannot be read ({type(exc).__name__}: {exc.strerror or exc}); make it a file readable by "
            f"this process, or set `snapshot_dir` to a directory it can read and write."
        )
    try:
        raw = json.loads(text)
    except ValueError as exc:
        return None, f"it is not valid JSON ({exc}); {fix}."
    found = raw.get("format") if isinstance(raw, dict) else None
    if found != SNAPSHOT_FORMAT:
        # Checked before the fields: another format may name them differently.
        return None, (
            f"it has snapshot format {found!r}, this airpeer reads format {SNAPSHOT_FORMAT} (written by another "
            f"version of dagster-airpeer?); {fix}."
        )
    try:
        return AirflowSnapshot.model_validate(raw), None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the top level"
        return None, f"{exc.error_count()} invalid field(s), first at {where}: {first['msg']}; {fix}."


def store_snapshot(path: Path, snapshot: AirflowSnapshot) -> bool:
    """Keep `snapshot` at `path` as the last good one; True if stored. A failed write is logged, never raised:
    the fresh snapshot still serves this load, only a later load while Airflow is down lacks the fallback."""
    try:
        write_atomically(path, snapshot.model_dump_json())
    except OSError as exc:
        dg.get_dagster_logger().warning(
            f"airpeer: cannot store the snapshot of Airflow instance '{snapshot.instance_name}' at {path} "
            f"({type(exc).__name__}: {exc.strerror or exc}). This load goes on with the fresh snapshot, but a "
            f"load while Airflow is down will have nothing to fall back on. Make {path.parent} writable, or "
            f"pass `snapshot_dir=` (build_defs_from_airflow_instance) a writable directory."
        )
        return False
    return True


def fetch_snapshot(
    instance: AirflowInstance,
    *,
    sources_for: Callable[[Sequence[Dag]], dict[str, str]] | None = None,
    tasks_for: Callable[[Sequence[Dag]], dict[str, tuple[Task, ...]]] | None = None,
    assets_for: Callable[[], Sequence[AirflowAsset]] | None = None,
) -> AirflowSnapshot:
    """Fetch all DAGs (and optionally sources and task lists, for the DAGs `sources_for` / `tasks_for` pick,
    and Airflow's assets when `assets_for` is given)."""
    log = dg.get_dagster_logger()

    def progress(done: int, total: int) -> None:
        log.info(f"airpeer: listed {done}/{total} DAGs of Airflow instance '{instance.name}'")

    dags = instance.list_dags(progress=progress)
    sources = sources_for(dags) if sources_for is not None else {}
    tasks = tasks_for(dags) if tasks_for is not None else {}
    assets = tuple(assets_for()) if assets_for is not None else ()
    # A code location loads once and then ticks its sensor for hours: log in here, not in the first tick.
    instance.open_session()
    return AirflowSnapshot(
        instance_name=instance.name,
        webserver_url=instance.webserver_url,
        api_version=instance.api_version,
        fetched_at=datetime.now(timezone.utc),
        dags=tuple(dags),
        sources=sources,
        tasks=tasks,
        assets=assets,
    )


def load_snapshot(
    instance: AirflowInstance,
    snapshot_dir: Path,
    *,
    sources_for: Callable[[Sequence[Dag]], dict[str, str]] | None = None,
    tasks_for: Callable[[Sequence[Dag]], dict[str, tuple[Task, ...]]] | None = None,
    assets_for: Callable[[], Sequence[AirflowAsset]] | None = None,
) -> AirflowSnapshot:
    """A fresh snapshot, stored as the last good one; or the last good one if Airflow is unreachable.

    The snapshot holds every DAG: selection happens when definitions are built, so a changed selector
    applies even to a stored snapshot. Only unreachability falls back: a refused password or a bad setting is raised, because serving stale
    definitions would hide a configuration error.
    """
    path = snapshot_path(snapshot_dir, instance.name)
    try:
        snapshot = fetch_snapshot(
            instance, sources_for=sources_for, tasks_for=tasks_for, assets_for=assets_for
        )
    except (AirflowConnectionError, AirflowVersionError) as exc:
        stored, problem = _read_snapshot(path)
        if stored is not None and stored.webserver_url != instance.webserver_url:
            problem = f"it is of another Airflow ({stored.webserver_url})."
            stored = None
        if stored is None:
            earlier = (
                f"The earlier snapshot at {path} cannot be used: {problem}"
                if problem is not None
                else f"No earlier snapshot exists at {path} to fall back on."
            )
            raise SnapshotUnavailableError(
                f"airpeer cannot build definitions for Airflow instance '{instance.name}': {exc} {earlier} "
                f"Start Airflow (or fix `webserver_url`) and reload the code location."
            ) from exc
        if stored.api_version in ("v1", "v2"):
            # The sensor's ticks during the outage then ask (and name in their errors) that version's
            # endpoints, not the version detection's.
            instance.use_api_version(stored.api_version)
        dg.get_dagster_logger().warning(
            f"airpeer: Airflow instance '{instance.name}' is unreachable ({exc}); using the last good snapshot "
            f"of {len(stored.dags)} DAGs taken at {stored.fetched_at.isoformat(timespec='seconds')} from "
            f"{path}. Reload the code location once Airflow is back to pick up DAG changes."
        )
        return stored
    except AirflowConfigError:
        raise
    store_snapshot(path, snapshot)
    return snapshot
