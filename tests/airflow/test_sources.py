"""DagSourceCache against a scripted Airflow 2 (REST v1) and 3 (REST v2): what is fetched, what is reused."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from airflow_fakes import FakeAirflow, dag_v1, dag_v2, json_response, make_instance

from dagster_airpeer.airflow import AirflowBasicAuthBackend, AirflowInstance, AirflowResponseError, Dag
from dagster_airpeer.airflow.sources import DagSourceCache


class Airflow2:
    """A v1 Airflow whose DAGs each live in a file; several DAGs may share one."""

    def __init__(self, files: dict[str, list[str]]) -> None:
        self.fake = FakeAirflow("v1")
        self.files = {name: f"# source of {name}\n" for name in files}
        self.parsed = {name: "2025-11-25T09:58:01.000000+00:00" for name in files}
        self.dag_files = {dag_id: name for name, dag_ids in files.items() for dag_id in dag_ids}
        self.fake.add("GET", "/api/v1/dags", self._dags)
        for name in files:
            self.fake.add("GET", f"/api/v1/dagSources/token-{name}", self._source(name))

    def _dags(self, request: httpx.Request) -> httpx.Response:
        dags = [
            dag_v1(
                dag_id,
                fileloc=f"/dags/{name}",
                file_token=f"token-{name}",
                last_parsed_time=self.parsed[name],
            )
            for dag_id, name in sorted(self.dag_files.items())
        ]
        return json_response(200, {"dags": dags, "total_entries": len(dags)})

    def _source(self, name: str) -> Any:
        return lambda request: json_response(200, {"content": self.files[name]})

    def source_requests(self) -> int:
        return sum(1 for r in self.fake.requests if "/dagSources/" in r.url.path)


class Airflow3:
    """A v2 Airflow serving each DAG's latest version and its code."""

    def __init__(self, dag_ids: list[str]) -> None:
        self.fake = FakeAirflow("v2")
        self.versions: list[dict[str, Any]] = []  # oldest first
        self.code: dict[str, str] = {}
        self.parsed = dict.fromkeys(dag_ids, "2025-11-25T09:58:01.123456Z")
        self.version_pages = 0
        for dag_id in dag_ids:
            self.new_version(dag_id)
        self.fake.add("GET", "/api/v2/dags", self._dags)
        self.fake.add("GET", "/api/v2/dags/~/dagVersions", self._versions)
        for dag_id in dag_ids:
            self.fake.add("GET", f"/api/v2/dagSources/{dag_id}", self._source(dag_id))

    def new_version(self, dag_id: str) -> None:
        number = 1 + sum(1 for v in self.versions if v["dag_id"] == dag_id)
        # UUIDv7-like: time-ordered, so a later version sorts after every earlier one.
        self.versions.append(
            {
                "id": f"0199{len(self.versions):028x}",
                "dag_id": dag_id,
                "version_number": number,
                "bundle_name": "dags-folder",
                "bundle_version": None,
                "created_at": "2025-11-25T09:58:01Z",
                "dag_display_name": dag_id,
                "bundle_url": None,
            }
        )
        self.code[dag_id] = f"# {dag_id} version {number}\n"

    def _dags(self, request: httpx.Request) -> httpx.Response:
        dags = [dag_v2(d, last_parsed_time=t) for d, t in sorted(self.parsed.items())]
        return json_response(200, {"dags": dags, "total_entries": len(dags)})

    def _versions(self, request: httpx.Request) -> httpx.Response:
        self.version_pages += 1
        params = request.url.params
        assert params["order_by"] == "-id"
        ordered = sorted(self.versions, key=lambda v: v["id"], reverse=True)
        offset, limit = int(params["offset"]), int(params["limit"])
        return json_response(
            200, {"dag_versions": ordered[offset : offset + limit], "total_entries": len(ordered)}
        )

    def _source(self, dag_id: str) -> Any:
        def serve(request: httpx.Request) -> httpx.Response:
            number = max(v["version_number"] for v in self.versions if v["dag_id"] == dag_id)
            body = {"content": self.code[dag_id], "dag_id": dag_id, "version_number": number,
                    "dag_display_name": dag_id}  # fmt: skip
            return json_response(200, body)

        return serve

    def source_requests(self) -> int:
        return sum(1 for r in self.fake.requests if "/dagSources/" in r.url.path)


def _load(instance: AirflowInstance, path: Path | None) -> tuple[dict[str, str], DagSourceCache]:
    """One code location load: list the DAGs, then get their sources through a fresh cache object."""
    dags: list[Dag] = instance.list_dags()
    cache = DagSourceCache(path)
    return cache.get_sources(instance, dags), cache


# -- Airflow 2 --------------------------------------------------------------------------------------------------


def test_v1_first_load_fetches_each_file_once(tmp_path: Path) -> None:
    af = Airflow2({"a.py": ["a"], "b.py": ["b1", "b2"], "c.py": ["c"]})
    sources, cache = _load(make_instance(af.fake), tmp_path / "cache.json")
    assert sources == {"a": "# source of a.py\n", "b1": "# source of b.py\n", "b2": "# source of b.py\n",
                       "c": "# source of c.py\n"}  # fmt: skip
    # b1 and b2 share a file: one request for both.
    assert af.source_requests() == 3
    assert cache.last_stats == {"cached": 0, "fetched": 4, "source_requests": 3}
    assert (tmp_path / "cache.json").exists()


def test_v1_reload_with_unchanged_parse_times_fetches_nothing(tmp_path: Path) -> None:
    af = Airflow2({"a.py": ["a"], "b.py": ["b"]})
    first, _ = _load(make_instance(af.fake), tmp_path / "cache.json")
    before = af.source_requests()
    again, cache = _load(make_instance(af.fake), tmp_path / "cache.json")
    assert again == first
    assert af.source_requests() == before
    assert cache.last_stats["cached"] == 2


def test_v1_a_reparsed_file_is_fetched_again(tmp_path: Path) -> None:
    af = Airflow2({"a.py": ["a"], "b.py": ["b"]})
    _load(make_instance(af.fake), tmp_path / "cache.json")
    af.files["b.py"] = "# b, edited\n"
    af.parsed["b.py"] = "2025-11-25T10:05:00.000000+00:00"
    before = af.source_requests()
    sources, cache = _load(make_instance(af.fake), tmp_path / "cache.json")
    assert sources["b"] == "# b, edited\n" and sources["a"] == "# source of a.py\n"
    assert af.source_requests() - before == 1
    assert cache.last_stats == {"cached": 1, "fetched": 1, "source_requests": 1}


def test_without_a_path_nothing_is_kept(tmp_path: Path) -> None:
    af = Airflow2({"a.py": ["a"]})
    _load(make_instance(af.fake), None)
    _load(make_instance(af.fake), None)
    assert af.source_requests() == 2
    assert list(tmp_path.iterdir()) == []


# -- Airflow 3 --------------------------------------------------------------------------------------------------


def test_v2_reload_reads_versions_not_sources(tmp_path: Path) -> None:
    af = Airflow3(["a", "b", "c"])
    first, _ = _load(make_instance(af.fake), tmp_path / "cache.json")
    assert first == {"a": "# a version 1\n", "b": "# b version 1\n", "c": "# c version 1\n"}
    assert af.source_requests() == 3
    # A re-parse moves last_parsed_time but creates no version: the sources are still valid.
    af.parsed = dict.fromkeys(af.parsed, "2025-11-25T10:30:00.000000Z")
    again, cache = _load(make_instance(af.fake), tmp_path / "cache.json")
    assert again == first
    assert af.source_requests() == 3
    assert cache.last_stats == {"cached": 3, "fetched": 0, "source_requests": 0}


def test_v2_a_new_version_is_fetched(tmp_path: Path) -> None:
    af = Airflow3(["a", "b"])
    _load(make_instance(af.fake), tmp_path / "cache.json")
    af.new_version("b")
    sources, cache = _load(make_instance(af.fake), tmp_path / "cache.json")
    assert sources == {"a": "# a version 1\n", "b": "# b version 2\n"}
    assert af.source_requests() == 3
    assert cache.last_stats["fetched"] == 1


def test_v2_versions_are_read_newest_first_until_every_dag_is_seen(tmp_path: Path) -> None:
    af = Airflow3(["a", "b"])
    for _ in range(20):
        af.new_version("b")  # b changes often, a never after its first version
    af.new_version("a")
    instance = make_instance(af.fake, page_size=5)
    sources, _ = _load(instance, tmp_path / "cache.json")
    assert sources == {"a": "# a version 2\n", "b": "# b version 21\n"}
    # The newest page already holds both DAGs' latest versions: the 18 older versions are never read.
    assert af.version_pages == 1


def test_v2_without_the_versions_listing_falls_back_to_parse_times(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    af = Airflow3(["a"])
    af.fake.add("GET", "/api/v2/dags/~/dagVersions", lambda r: json_response(404, {"detail": "Not Found"}))
    caplog.set_level(logging.INFO, logger="dagster_airpeer.airflow.sources")
    _load(make_instance(af.fake, max_retries=0), tmp_path / "cache.json")
    _load(make_instance(af.fake, max_retries=0), tmp_path / "cache.json")
    assert af.source_requests() == 1
    af.parsed["a"] = "2025-11-25T10:30:00.000000Z"
    _load(make_instance(af.fake, max_retries=0), tmp_path / "cache.json")
    assert af.source_requests() == 2
    assert "DAG versions unavailable" in caplog.text


# -- the cache file ---------------------------------------------------------------------------------------------


def test_a_cache_from_another_server_is_ignored(tmp_path: Path) -> None:
    af = Airflow2({"a.py": ["a"]})
    path = tmp_path / "cache.json"
    _load(make_instance(af.fake), path)
    _load(make_instance(af.fake, url="http://other-airflow.test:8080"), path)
    assert af.source_requests() == 2
    assert json.loads(path.read_text())["webserver_url"] == "http://other-airflow.test:8080"


@pytest.mark.parametrize("content", ["{not json", json.dumps({"format": 99, "entries": 3}), ""])
def test_an_unreadable_cache_is_ignored(tmp_path: Path, content: str) -> None:
    af = Airflow2({"a.py": ["a"]})
    path = tmp_path / "cache.json"
    path.write_text(content)
    sources, _ = _load(make_instance(af.fake), path)
    assert sources == {"a": "# source of a.py\n"}
    _load(make_instance(af.fake), path)
    assert af.source_requests() == 1  # rewritten after the first load, valid for the second


def test_an_unwritable_cache_costs_requests_not_the_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    af = Airflow2({"a.py": ["a"]})
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    sources, _ = _load(make_instance(af.fake), blocker / "cache.json")
    assert sources == {"a": "# source of a.py\n"}
    assert "cannot write the DAG source cache" in caplog.text


def test_no_dags_no_requests(tmp_path: Path) -> None:
    af = Airflow2({})
    instance = make_instance(af.fake)
    seen = len(af.fake.requests)
    assert DagSourceCache(tmp_path / "c.json").get_sources(instance, []) == {}
    assert len(af.fake.requests) == seen


# -- DAGs whose source is not served ------------------------------------------------------------------------------


def test_v2_a_dag_deleted_or_forbidden_after_the_listing_has_no_source(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    af = Airflow3(["a", "gone", "secret"])
    af.fake.add("GET", "/api/v2/dagSources/gone", lambda r: json_response(404, {"detail": "DAG not found"}))
    af.fake.add("GET", "/api/v2/dagSources/secret", lambda r: json_response(403, {"detail": "Forbidden"}))
    path = tmp_path / "cache.json"
    with caplog.at_level(logging.WARNING, logger="dagster_airpeer.airflow.sources"):
        sources, _ = _load(make_instance(af.fake), path)
    assert sources == {"a": "# a version 1\n"}
    [warning] = [r.getMessage() for r in caplog.records if "did not serve the source" in r.getMessage()]
    assert "2 DAG(s)" in warning and "'gone'" in warning and "'secret'" in warning
    assert set(json.loads(path.read_text())["entries"]) == {"a"}

    # Nothing stored for them: the next load asks again (the DAG may be back).
    def asked() -> list[str]:
        return [r.url.path.rsplit("/", 1)[1] for r in af.fake.requests if "/dagSources/" in r.url.path]

    before = asked()
    _load(make_instance(af.fake), path)
    assert sorted(set(asked()[len(before) :])) == ["gone", "secret"]


def test_v1_a_deleted_file_or_dag_has_no_source(tmp_path: Path) -> None:
    af = Airflow2({"a.py": ["a"], "gone.py": ["g1", "g2"]})
    af.fake.add(
        "GET", "/api/v1/dagSources/token-gone.py", lambda r: json_response(404, {"title": "Not Found"})
    )
    instance = make_instance(af.fake)
    # A DAG listed without a file token is looked up first; that lookup answers 404 too.
    vanished = Dag(dag_id="vanished")
    sources = DagSourceCache(tmp_path / "cache.json").get_sources(instance, [*instance.list_dags(), vanished])
    assert sources == {"a": "# source of a.py\n"}


def test_other_errors_still_fail_the_load(tmp_path: Path) -> None:
    af = Airflow3(["a"])
    af.fake.add("GET", "/api/v2/dagSources/a", lambda r: json_response(200, {"content": 5}))
    with pytest.raises(AirflowResponseError):
        _load(make_instance(af.fake), tmp_path / "cache.json")


@pytest.mark.timeout(600)
def test_real_airflow_a_vanished_dag_has_no_source(airflow: Any, tmp_path: Path) -> None:
    backend = AirflowBasicAuthBackend(airflow.url, airflow.username, airflow.password)
    with AirflowInstance(backend, name=f"src_af{airflow.major}") as instance:
        ok = instance.get_dag("airpeer_ok")
        # Listed a moment ago, gone now: what Airflow answers for a DAG deleted between list and fetch.
        vanished = Dag(dag_id="airpeer_vanished_between_list_and_fetch")
        sources = DagSourceCache(tmp_path / "cache.json").get_sources(instance, [ok, vanished])
    assert set(sources) == {"airpeer_ok"} and 'dag_id="airpeer_ok"' in sources["airpeer_ok"]
