"""The observe API: what assets_with_*_mappings record on AssetSpecs and AssetsDefinitions (no Airflow)."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pytest

from dagster_airpeer import (
    assets_with_dag_mappings,
    assets_with_multiple_task_mappings,
    assets_with_task_mappings,
)
from dagster_airpeer.observe import TASK_MAPPINGS_KEY, dag_ids_of, task_handles_of


@dg.multi_asset(
    specs=[dg.AssetSpec("stg_customers"), dg.AssetSpec("customers", deps=["stg_customers"])],
    check_specs=[dg.AssetCheckSpec("unique_id", asset="customers")],
)
def dbt_like():  # type: ignore[no-untyped-def]  # a multi-output op must not be annotated None
    """Stands for a @dbt_assets multi-asset: internal deps and a check."""


def _specs(items: Any) -> dict[dg.AssetKey, dg.AssetSpec]:
    out: dict[dg.AssetKey, dg.AssetSpec] = {}
    for item in items:
        for spec in [item] if isinstance(item, dg.AssetSpec) else item.specs:
            out[spec.key] = spec
    return out


def test_task_mappings_mark_specs_and_multi_assets_and_keep_deps_and_checks() -> None:
    mapped = assets_with_task_mappings(
        dag_id="rebuild",
        task_mappings={
            "load": [dg.AssetSpec(["raw", "customers"])],
            "build": [dbt_like],
            "export": [dg.AssetSpec("customers_csv", deps=["customers"])],
        },
    )
    specs = _specs(mapped)
    assert task_handles_of(specs[dg.AssetKey(["raw", "customers"])]) == (("rebuild", "load"),)
    assert task_handles_of(specs[dg.AssetKey("stg_customers")]) == (("rebuild", "build"),)
    assert task_handles_of(specs[dg.AssetKey("customers")]) == (("rebuild", "build"),)
    assert [d.asset_key for d in specs[dg.AssetKey("customers")].deps] == [dg.AssetKey("stg_customers")]
    assert [d.asset_key for d in specs[dg.AssetKey("customers_csv")].deps] == [dg.AssetKey("customers")]
    multi = next(m for m in mapped if isinstance(m, dg.AssetsDefinition))
    assert multi.check_keys == dbt_like.check_keys
    # The original objects are untouched: mapping returns new ones.
    assert all(TASK_MAPPINGS_KEY not in s.metadata for s in dbt_like.specs)
    graph = dg.Definitions(assets=mapped).resolve_asset_graph()
    assert dg.AssetKey("customers_csv") in graph.get_all_asset_keys()


def test_mapping_twice_adds_without_duplicates() -> None:
    once = assets_with_task_mappings(dag_id="d", task_mappings={"t": [dg.AssetSpec("a")]})
    twice = assets_with_task_mappings(dag_id="d", task_mappings={"t": once})
    both = assets_with_multiple_task_mappings(
        assets=twice, task_handles=[{"dag_id": "d", "task_id": "t"}, {"dag_id": "weekly", "task_id": "t"}]
    )
    assert task_handles_of(_specs(both)[dg.AssetKey("a")]) == (("d", "t"), ("weekly", "t"))


def test_dag_mappings() -> None:
    mapped = assets_with_dag_mappings(
        dag_mappings={"daily": [dg.AssetSpec("a"), dbt_like], "weekly": [dg.AssetSpec("b")]}
    )
    specs = _specs(mapped)
    assert dag_ids_of(specs[dg.AssetKey("a")]) == ("daily",)
    assert dag_ids_of(specs[dg.AssetKey("customers")]) == ("daily",)
    assert dag_ids_of(specs[dg.AssetKey("b")]) == ("weekly",)
    assert task_handles_of(specs[dg.AssetKey("a")]) == ()
    again = assets_with_dag_mappings(dag_mappings={"weekly": [specs[dg.AssetKey("a")]]})
    assert dag_ids_of(_specs(again)[dg.AssetKey("a")]) == ("daily", "weekly")


def test_the_asset_decorator_is_mappable() -> None:
    @dg.asset(deps=["upstream"])
    def table() -> None: ...

    (mapped,) = assets_with_task_mappings(dag_id="d", task_mappings={"t": [table]})
    assert isinstance(mapped, dg.AssetsDefinition)
    (spec,) = mapped.specs
    assert task_handles_of(spec) == (("d", "t"),)
    assert [d.asset_key for d in spec.deps] == [dg.AssetKey("upstream")]


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda: assets_with_task_mappings(dag_id="", task_mappings={"t": []}), "dag_id"),
        (lambda: assets_with_task_mappings(dag_id="d", task_mappings=[]), "task_mappings"),  # type: ignore[arg-type]
        (lambda: assets_with_task_mappings(dag_id="d", task_mappings={"t": dg.AssetSpec("a")}), "list"),  # type: ignore[dict-item]
        (lambda: assets_with_task_mappings(dag_id="d", task_mappings={"t": ["a"]}), "str"),  # type: ignore[list-item]
        (lambda: assets_with_dag_mappings(dag_mappings={1: []}), "DAG id"),  # type: ignore[dict-item]
        (lambda: assets_with_multiple_task_mappings(assets=[], task_handles=[]), "at least one"),
        (
            lambda: assets_with_multiple_task_mappings(
                assets=[dg.AssetSpec("a")],
                task_handles=[{"dag": "d", "task_id": "t"}],  # type: ignore[typeddict-item]
            ),
            "'dag_id' and 'task_id'",
        ),
    ],
)
def test_bad_arguments_name_what_was_expected(call: Any, expected: str) -> None:
    with pytest.raises((TypeError, ValueError), match=expected):
        call()
