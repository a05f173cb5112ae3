"""Dagster components of airpeer: `AirflowInstanceComponent`, for `dg` projects and `defs.yaml` files.

`dg scaffold defs dagster_airpeer.AirflowInstanceComponent airflow` writes a `defs.yaml` for it; the component is
found through the `dagster_dg_cli.registry_modules` entry point of the package (pyproject.toml).
"""

from .instance_component import (
    AirflowInstanceComponent,
    AirflowInstanceComponentScaffolder,
    AirflowInstanceComponentScaffoldParams,
    TaskMappingModel,
)
from .models import AirflowAuthModel, DagSelectionModel, SensorModel, TranslationModel

__all__ = [
    "AirflowAuthModel",
    "AirflowInstanceComponent",
    "AirflowInstanceComponentScaffoldParams",
    "AirflowInstanceComponentScaffolder",
    "DagSelectionModel",
    "SensorModel",
    "TaskMappingModel",
    "TranslationModel",
]
