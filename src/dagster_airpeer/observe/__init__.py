"""Observe: map Airflow tasks and DAGs to the Dagster assets they build.

```python
import dagster as dg
from dagster_airpeer import assets_with_task_mappings, build_defs_from_airflow_instance

defs = build_defs_from_airflow_instance(
    airflow_instance=airflow_instance,
    defs=dg.Definitions(
        assets=assets_with_task_mappings(
            dag_id="rebuild_customers_list",
            task_mappings={
                "load_raw_customers": [dg.AssetSpec(key=["raw_data", "raw_customers"])],
                "build_dbt_models": [dbt_project_assets],
                "export_customers": [dg.AssetSpec(key="customers_csv", deps=["customers"])],
            },
        )
    ),
)
```

`mapping` records the mappings in asset metadata; `build` checks them against Airflow at load, adds lineage
and task metadata, and indexes them (`ObservedMappings`) for the sensor; `tasks` lists the tasks of mapped DAGs
for the snapshot.
"""

from .build import INSTANCE_KEY, ObservedDefinitions, has_mappings, observe_definitions, task_mapped_dag_ids
from .index import ObservedMappings
from .mapping import (
    DAG_MAPPINGS_KEY,
    TASK_MAPPINGS_KEY,
    TaskHandleDict,
    assets_with_dag_mappings,
    assets_with_multiple_task_mappings,
    assets_with_task_mappings,
    dag_ids_of,
    task_handles_of,
)
from .tasks import fetch_task_lists, task_lists_for

__all__ = [
    "DAG_MAPPINGS_KEY",
    "INSTANCE_KEY",
    "TASK_MAPPINGS_KEY",
    "ObservedDefinitions",
    "ObservedMappings",
    "TaskHandleDict",
    "assets_with_dag_mappings",
    "assets_with_multiple_task_mappings",
    "assets_with_task_mappings",
    "dag_ids_of",
    "fetch_task_lists",
    "has_mappings",
    "observe_definitions",
    "task_handles_of",
    "task_lists_for",
    "task_mapped_dag_ids",
]
