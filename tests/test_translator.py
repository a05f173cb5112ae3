"""Asset specs from DAGs: keys, tags, metadata, and the translator convention."""

from __future__ import annotations

import dagster as dg
import pytest

from dagster_airpeer import Dag, DagsterAirflowTranslator, sanitize_dag_id


@pytest.mark.parametrize("dag_id", ["rebuild_customers_list", "etl-daily-load", "A1_b2"])
def test_plain_dag_ids_are_kept(dag_id: str) -> None:
    assert sanitize_dag_id(dag_id) == dag_id


def test_other_dag_ids_are_sanitized_without_collisions() -> None:
    odd = ["a b", "a/b", "a:b", "a.b", "a\u00e9b", "a\u00e8b", "a_b"]
    keys = [sanitize_dag_id(d) for d in odd]
    assert len(set(keys)) == len(keys)
    assert all(k.replace("_", "").isalnum() and k.isascii() for k in keys)
    assert sanitize_dag_id("a b") == sanitize_dag_id("a b")  # stable


def test_default_spec() -> None:
    dag = Dag(
        dag_id="rebuild_customers_list",
        description="Rebuilds customers",
        tags=("finance", "tier:gold", "a b"),
        owners=("airflow", "team:data", "me@example.com"),
        schedule="@daily",
        fileloc="/dags/customers.py",
        is_paused=False,
    )
    spec = DagsterAirflowTranslator().get_asset_spec(
        "inst", dag, dag_url="http://af/dags/rebuild_customers_list"
    )
    assert spec.key == dg.AssetKey(["inst", "dag", "rebuild_customers_list"])
    assert spec.description == "Rebuilds customers"
    assert spec.tags["finance"] == "" and spec.tags["tier"] == "gold" and "a_b" in spec.tags
    assert "airflow" in spec.kinds
    assert list(spec.owners) == ["team:data", "me@example.com"]
    assert spec.metadata["airflow/schedule"] == "@daily"
    assert spec.metadata["airflow/dag_url"].value == "http://af/dags/rebuild_customers_list"
    # Valid as a definition.
    dg.Definitions(assets=[spec]).resolve_asset_graph()


def test_subclass_changes_keys_and_groups() -> None:
    class Mine(DagsterAirflowTranslator):
        def get_asset_key(self, instance_name: str, dag: Dag) -> dg.AssetKey:
            return dg.AssetKey(["airflow", dag.dag_id])

        def get_group_name(self, dag: Dag) -> str | None:
            return "legacy"

    spec = Mine().get_asset_spec("inst", Dag(dag_id="x"), dag_url="u")
    assert spec.key == dg.AssetKey(["airflow", "x"]) and spec.group_name == "legacy"
    assert "x" in (spec.description or "")
