"""A code location with a sensor named like airpeer's, for writing its cursor with `dagster sensor cursor --set`."""

import dagster as dg


@dg.sensor(name="unit_peered__airflow_dag_runs")
def unit_sensor() -> dg.SkipReason:
    return dg.SkipReason("test only")


defs = dg.Definitions(sensors=[unit_sensor])
