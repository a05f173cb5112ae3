"""Stage 5, decommission: Airflow no longer has ``rebuild_customers_list``; Dagster schedules its assets itself.

Once every task of the DAG is proxied (``airpeer decommission check`` says "ready to decommission"), the DAG file
is removed from Airflow and this file replaces ``migrate.py``: the same three assets with the same keys
(``raw_data/raw_customers``, the dbt models, ``customers_csv``), so their history in Dagster simply continues,
and a daily schedule at the DAG's time (``@daily``, midnight UTC) materializes them. No Airflow is involved:
nothing here imports airpeer or reaches Airflow.
"""

import sys
from pathlib import Path

import dagster as dg

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from customers_assets import customers_csv, dbt_project_assets, dbt_resource, raw_customers

rebuild_customers_list_job = dg.define_asset_job(
    "rebuild_customers_list",
    selection=dg.AssetSelection.assets(raw_customers, dbt_project_assets, customers_csv),
    description="What the Airflow DAG rebuild_customers_list did: load, dbt build, export.",
)

rebuild_customers_list_schedule = dg.ScheduleDefinition(
    job=rebuild_customers_list_job,
    cron_schedule="0 0 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

defs = dg.Definitions(
    assets=[raw_customers, dbt_project_assets, customers_csv],
    jobs=[rebuild_customers_list_job],
    schedules=[rebuild_customers_list_schedule],
    resources={"dbt": dbt_resource()},
)
