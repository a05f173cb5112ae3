"""DAG sources for the asset pages, fetched concurrently and cached on disk between code location loads.

Showing each DAG's source on its asset costs one request per DAG file. Done one after the other with a
password check each, that is minutes for a thousand DAGs at every load of the code location. Here the first
load fetches them concurrently over the instance's pooled connections, and a reload asks Airflow only
for what tells whether a file changed, then fetches just the sources that may have changed.

What proves a stored source is still what Airflow serves:

* **Airflow 3 (REST v2)** serves the code of a DAG's latest *DAG version*. A new version appears whenever the
  parsed DAG changes; the cached source is kept while the latest version id (and its bundle version) stays
  the same. The latest versions of all DAGs come from one listing, `GET /api/v2/dags/~/dagVersions`, newest
  first, read only until every wanted DAG has been seen. Known limit: Airflow 3 rewrites a version in place
  (same id) while no task instance has run on it yet; a DAG edited before its first run can then show its
  previous source until its next version.
* **Airflow 2 (REST v1)** has no versions nor content hash in its API. It updates a file's stored code only
  while parsing that file, and every parse also moves the `last_parsed_time` of the file's DAGs. The cached
  source is kept while the file token and `last_parsed_time` are unchanged, which is exact but means a
  re-parse of an unchanged file (by default every 30 s) costs one request for that file at the next load.
  DAGs sharing a file share one request.

The fingerprint is always read *before* the source it is stored with, so a change racing the fetch leaves
an older fingerprint next to a newer source: the next load fetches again, it never keeps a stale source.
No dagster import here: this module belongs to the Airflow client.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from ._files import write_atomically
from .errors import AirflowAuthError, AirflowError, AirflowNotFoundError
from .instance import AirflowInstance
from .models import Dag, DagVersion

__all__ = ["DagSourceCache"]

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
#: Concurrent source requests: enough to keep a few server workers busy without queueing hundreds.
DEFAULT_MAX_WORKERS = 8


class _Entry(BaseModel):
    model_config = ConfigDict(extra="ignore")

    fingerprint: str
    source: str


class _CacheFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    format: int = CACHE_FORMAT
    webserver_url: str
    api_version: str
    entries: dict[str, _Entry] = {}


class DagSourceCache:
    """The sources of DAGs, by dag_id, kept in a JSON file at `path` (no file: nothing kept between loads).

    Args:
        path: the cache file; created with its directory when first written. None disables persistence.
        max_workers: concurrent source requests on a first load or after changes.
    """

    def __init__(self, path: Path | None, *, max_workers: int = DEFAULT_MAX_WORKERS) -> None:
        self.path = Path(path) if path is not None else None
        self.max_workers = max(1, int(max_workers))
        #: What the last get_sources() did, for logs and benchmarks: DAGs served from cache, fetched, requests.
        self.last_stats: dict[str, int] = {}

    def get_sources(self, instance: AirflowInstance, dags: Sequence[Dag]) -> dict[str, str]:
        """The source of each DAG: {dag_id: source}, from the cache when provably unchanged.

        A DAG whose source Airflow does not serve (404: deleted since it was listed; 403: this user may not
        read it) is left out, with a warning naming it: it has no source, and the load goes on.
        """
        if not dags:
            self.last_stats = {"cached": 0, "fetched": 0, "source_requests": 0}
            return {}
        fingerprints = self._fingerprints(instance, dags)
        stored = self._read(instance)
        sources: dict[str, str] = {}
        stale: list[Dag] = []
        for dag in dags:
            entry = stored.get(dag.dag_id)
            fingerprint = fingerprints.get(dag.dag_id)
            if entry is not None and fingerprint is not None and entry.fingerprint == fingerprint:
                sources[dag.dag_id] = entry.source
            else:
                stale.append(dag)
        fetched, requests = self._fetch(instance, stale)
        sources.update(fetched)
        self.last_stats = {
            "cached": len(dags) - len(stale),
            "fetched": len(stale),
            "source_requests": requests,
        }
        if stale:
            log.info(
                "airpeer: %d DAG sources of Airflow instance '%s' from cache, %d fetched (%d requests)",
                len(dags) - len(stale), instance.name, len(stale), requests,
            )  # fmt: skip
        self._write(instance, dags, fingerprints, sources, stored)
        return {dag.dag_id: sources[dag.dag_id] for dag in dags if dag.dag_id in sources}

    # -- fingerprints ---------------------------------------------------------------------------------------

    def _fingerprints(self, instance: AirflowInstance, dags: Sequence[Dag]) -> dict[str, str]:
        """What must stay equal for a stored source to be reused; DAGs without one are always fetched."""
        if instance.api_version == "v2":
            try:
                versions = _latest_versions(instance, {dag.dag_id for dag in dags})
            except AirflowError as exc:
                # A server without the listing (or refusing it): fall back to the parse time, still exact.
                log.info("airpeer: DAG versions unavailable (%s); using parse times to validate sources", exc)
            else:
                return {
                    dag_id: f"v2|{v.id}|{v.version_number}|{v.bundle_name}|{v.bundle_version}"
                    for dag_id, v in versions.items()
                }
        found: dict[str, str] = {}
        for dag in dags:
            if dag.last_parsed_time is not None and (dag.file_token or dag.fileloc):
                found[dag.dag_id] = (
                    f"parsed|{dag.file_token or dag.fileloc}|{dag.last_parsed_time.isoformat()}"
                )
        return found

    # -- fetching -------------------------------------------------------------------------------------------

    def _fetch(self, instance: AirflowInstance, dags: Sequence[Dag]) -> tuple[dict[str, str], int]:
        """Fetch the sources of `dags` concurrently; on Airflow 2 once per file. Returns (sources, requests).

        DAGs whose source is not served are missing from the result (see `get_sources`)."""
        if not dags:
            return {}, 0
        if instance.api_version == "v1":
            # Airflow 2 serves a source per file: DAGs sharing a file token share one request.
            by_file: dict[str, list[Dag]] = {}
            for dag in dags:
                by_file.setdefault(dag.file_token or f"dag:{dag.dag_id}", []).append(dag)
            leaders = [group[0] for group in by_file.values()]
            fetched = self._fetch_each(instance, leaders)
            sources = {
                dag.dag_id: fetched[group[0].dag_id]
                for group in by_file.values()
                if group[0].dag_id in fetched
                for dag in group
            }
            return sources, len(leaders)
        return self._fetch_each(instance, dags), len(dags)

    def _fetch_each(self, instance: AirflowInstance, dags: Sequence[Dag]) -> dict[str, str]:
        """One request per DAG over the pooled connections; a 404 or 403 drops that DAG, not the load."""
        instance.api_version  # noqa: B018 - detect once here rather than racing in the workers

        def one(dag: Dag) -> str | AirflowError:
            try:
                return instance.get_dag_source(dag)
            except (AirflowNotFoundError, AirflowAuthError) as exc:
                # Deleted between the listing and this request, or not readable by this user. Credentials
                # refused for good would have failed the listing just before.
                return exc

        workers = max(1, min(self.max_workers, len(dags)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="airpeer-sources") as pool:
            # Each task runs in a copy of our context so that a deadline() around this call holds there too.
            futures = [(dag.dag_id, pool.submit(contextvars.copy_context().run, one, dag)) for dag in dags]
            answers = {dag_id: future.result() for dag_id, future in futures}
        missing = {dag_id: a for dag_id, a in answers.items() if isinstance(a, AirflowError)}
        if missing:
            first_id, first = next(iter(missing.items()))
            shown = ", ".join(repr(d) for d in list(missing)[:10]) + (", ..." if len(missing) > 10 else "")
            log.warning(
                "airpeer: Airflow instance '%s' did not serve the source of %d DAG(s), shown without source: "
                "%s (deleted since they were listed, or not readable by this user; %r: %s)",
                instance.name, len(missing), shown, first_id, first,
            )  # fmt: skip
        return {dag_id: a for dag_id, a in answers.items() if isinstance(a, str)}

    # -- the file -------------------------------------------------------------------------------------------

    def _read(self, instance: AirflowInstance) -> dict[str, _Entry]:
        if self.path is None:
            return {}
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.warning(
                "airpeer: cannot read the DAG source cache %s (%s); fetching every source", self.path, exc
            )
            return {}
        try:
            cache = _CacheFile.model_validate_json(text)
        except ValidationError:
            log.warning("airpeer: ignoring the unreadable DAG source cache %s", self.path)
            return {}
        # Another server or API version behind the same name: nothing stored applies.
        if (
            cache.format != CACHE_FORMAT
            or cache.webserver_url != instance.webserver_url
            or cache.api_version != instance.api_version
        ):
            return {}
        return cache.entries

    def _write(
        self,
        instance: AirflowInstance,
        dags: Sequence[Dag],
        fingerprints: dict[str, str],
        sources: dict[str, str],
        stored: dict[str, _Entry],
    ) -> None:
        if self.path is None:
            return
        entries = {
            dag.dag_id: _Entry(fingerprint=fingerprints[dag.dag_id], source=sources[dag.dag_id])
            for dag in dags
            if dag.dag_id in fingerprints and dag.dag_id in sources
        }
        unchanged = entries.keys() == stored.keys() and all(
            stored[k].fingerprint == e.fingerprint for k, e in entries.items()
        )
        if unchanged:
            return
        cache = _CacheFile(
            webserver_url=instance.webserver_url, api_version=instance.api_version, entries=entries
        )
        try:
            write_atomically(self.path, cache.model_dump_json())
        except OSError as exc:
            # A read-only or full disk costs the next load some requests, nothing more.
            log.warning("airpeer: cannot write the DAG source cache %s (%s)", self.path, exc)


def _latest_versions(instance: AirflowInstance, wanted: set[str]) -> dict[str, DagVersion]:
    """The latest version of each wanted DAG, from the listing of all versions, newest first.

    Version ids are UUIDv7 (time-ordered), so ordering by id descending lists each DAG's latest version before
    its older ones; reading stops once every wanted DAG has been seen. A version inserted while paging shifts
    the listing right: items repeat, none is skipped, and a repeat is never newer than what was kept.
    """
    limit = max(2, instance.page_size)
    latest: dict[str, DagVersion] = {}
    offset = 0
    # Bounded: the listing cannot be longer than its announced total plus what arrives while reading.
    for _ in range(10_000):
        page = instance.list_dag_versions(offset=offset, limit=limit)
        for version in page.versions:
            if version.dag_id in wanted:
                latest.setdefault(version.dag_id, version)
        offset += len(page.versions)
        if len(latest) == len(wanted) or not page.versions or offset >= page.total_entries:
            return latest
    return latest
