"""A second code location for the clean tests, materialized into the same Dagster instance as the peering.

`other_location_asset` (with its check) is no asset of the peering: its history must survive `airpeer clean`.
`shared_key_asset` writes the key of a peered DAG's asset, as a dbt model does once the observe stage maps it and
the migrate stage materializes it in Dagster: its history is not the peering's alone.
"""

import dagster as dg


@dg.asset(check_specs=[dg.AssetCheckSpec("rows", asset="other_location_asset")])
def other_location_asset() -> dg.MaterializeResult:
    return dg.MaterializeResult(check_results=[dg.AssetCheckResult(check_name="rows", passed=True)])


@dg.asset(key=["clean_peered", "dag", "airpeer_fail"])
def shared_key_asset() -> None:
    return None


defs = dg.Definitions(assets=[other_location_asset, shared_key_asset])
