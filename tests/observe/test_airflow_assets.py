"""The key scheme of Airflow assets, their specs and lineage, and their materializations (no Airflow)."""

from __future__ import annotations

import random
import re
from datetime import datetime, timezone

import dagster as dg
import pytest

from dagster_airpeer.airflow.assets import AirflowAsset, AirflowAssetEvent
from dagster_airpeer.events import COMPLETION_METADATA_KEY
from dagster_airpeer.observe.airflow_assets import (
    airflow_asset_key,
    airflow_asset_specs,
    asset_event_completion_id,
    decode_key_part,
    encode_key_part,
    materialization_for_asset_event,
)

_PART = re.compile(r"^[A-Za-z0-9_]+$")
_ALPHABET = "abcXYZ019_/.:-@?=&%+#,~ \t\n\\\"'é中😀_x_s__"


def _random_text(rng: random.Random) -> str:
    return "".join(
        rng.choice(_ALPHABET) if rng.random() < 0.9 else chr(rng.randrange(1, 0x10FFFF))
        for _ in range(rng.randrange(0, 12))
    )


def test_encoding_is_lossless_and_injective_over_many_random_strings() -> None:
    rng = random.Random(7)
    seen: dict[str, str] = {}
    for _ in range(20000):
        text = _random_text(rng)
        if 0xD800 <= max((ord(c) for c in text), default=0) <= 0xDFFF:
            continue
        part = encode_key_part(text)
        assert _PART.match(part), (text, part)
        assert decode_key_part(part) == text
        assert seen.setdefault(part, text) == text  # no two texts share an encoding


@pytest.mark.parametrize(
    ("text", "part"),
    [
        ("s3://bucket/key.csv", "s3_c_s_sbucket_skey_dcsv"),
        ("my_table", "my__table"),
        ("", "_z"),
        ("é", "_x0000e9"),
    ],
)
def test_encoding_examples(text: str, part: str) -> None:
    assert encode_key_part(text) == part and decode_key_part(part) == text


@pytest.mark.parametrize("bad", ["a-b", "_", "_y", "_x00zz00", "_x0000", "__z_"])
def test_decoding_refuses_what_no_text_encodes_to(bad: str) -> None:
    with pytest.raises(ValueError):
        decode_key_part(bad)


def test_keys_tell_airflow_2_datasets_and_3_assets_apart_and_match_across_the_migration() -> None:
    uri = "s3://b/x"
    dataset = airflow_asset_key("af", uri=uri)  # Airflow 2: a dataset is its URI
    migrated = airflow_asset_key("af", uri=uri, name=uri)  # Airflow 3 after the migration: name = uri
    named = airflow_asset_key("af", uri=uri, name="x")
    assert dataset == migrated == dg.AssetKey(["af", "asset", "s3_c_s_sb_sx"])
    assert named == dg.AssetKey(["af", "asset", "x", "s3_c_s_sb_sx"])
    # A name that looks like an encoded URI cannot collide: the key lengths differ.
    assert airflow_asset_key("af", uri="x", name="x") != airflow_asset_key("af", uri="y", name="x")
    assert airflow_asset_key("af", uri=uri) != airflow_asset_key("other", uri=uri)


def _asset(**kw: object) -> AirflowAsset:
    base: dict[str, object] = {"id": 1, "name": "s3://b/x", "uri": "s3://b/x"}
    base.update(kw)
    return AirflowAsset(**base)  # type: ignore[arg-type]


def test_specs_link_producers_and_consumers() -> None:
    dags = {d: dg.AssetSpec(key=["af", "dag", d]) for d in ("prod", "cons", "other")}
    mapped = {("prod", "t_mapped"): [dg.AssetKey("table")]}
    assets = [
        _asset(producing_tasks=(("prod", "t"), ("prod", "t_mapped")), consuming_dags=("cons",)),
        _asset(
            id=2,
            name="n",
            uri="file:///y",
            producing_tasks=(("unpeered", "t"),),
            consuming_dags=("cons", "gone"),
        ),
    ]
    specs, updated = airflow_asset_specs("af", assets, dag_specs=dags, task_assets=mapped)
    first, second = specs
    assert {d.asset_key for d in first.deps} == {dg.AssetKey("table"), dags["prod"].key}
    assert second.deps == [] or list(second.deps) == []
    assert set(updated) == {"cons"}
    assert {d.asset_key for d in updated["cons"].deps} == {first.key, second.key}
    assert first.metadata["airflow/asset_uri"] == "s3://b/x" and "airflow" in first.kinds
    dg.Definitions.validate_loadable(
        dg.Definitions(assets=[*specs, *updated.values(), dags["prod"], dags["other"], dg.AssetSpec("table")])
    )


def test_materialization_carries_source_and_a_stable_completion_id() -> None:
    event = AirflowAssetEvent(
        id=5,
        asset_id=1,
        name="n",
        uri="file:///y",
        timestamp=datetime(2026, 1, 1, tzinfo=timezone.utc),
        extra={"rows": 3, "from_rest_api": True},
        source_dag_id="prod",
        source_task_id="t",
        source_run_id="r1",
        source_map_index=-1,
    )
    m = materialization_for_asset_event("af", event, run_url="http://x/run")
    assert m.asset_key == airflow_asset_key("af", uri="file:///y", name="n")

    def value(label: str) -> object:
        return getattr(m.metadata[label], "value", m.metadata[label])

    assert value(COMPLETION_METADATA_KEY) == asset_event_completion_id("af", event)
    assert asset_event_completion_id("af", event) == asset_event_completion_id("af", event.model_copy())
    assert value("airflow/source_dag_id") == "prod" and value("airflow/source_run_id") == "r1"
    assert value("airflow/from_rest_api") is True and "airflow/source_map_index" not in m.metadata
    assert value("airflow/extra") == {"rows": 3, "from_rest_api": True}
