"""Migrate, Dagster side: the jobs that proxied Airflow tasks launch (`dagster_airpeer.in_airflow` is the other side).

One asset job per task-mapped Airflow task, named `in_airflow.naming.proxy_job_name(instance, dag_id,
task_id)`, selecting the task's executable mapped assets and their asset checks. The proxy in Airflow knows
that name without asking Dagster anything about assets, and launches the job by it.
"""

from .jobs import proxy_jobs
from .runs import ProxiedRuns

__all__ = ["ProxiedRuns", "proxy_jobs"]
