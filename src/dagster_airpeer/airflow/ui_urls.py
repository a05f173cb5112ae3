"""Links into Airflow's web UI, which differ between Airflow 2 (REST v1) and Airflow 3 (REST v2).

Pure functions of the base URL and API version, so links can be built from a stored snapshot while Airflow
itself is unreachable.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode


def dag_ui_url(webserver_url: str, api_version: str, dag_id: str) -> str:
    """The DAG's page: the grid view on Airflow 2, the DAG page on Airflow 3."""
    base = webserver_url.rstrip("/")
    if api_version == "v1":
        return f"{base}/dags/{quote(dag_id, safe='')}/grid"
    return f"{base}/dags/{quote(dag_id, safe='')}"


def run_ui_url(webserver_url: str, api_version: str, dag_id: str, run_id: str) -> str:
    """One DAG run's page."""
    base = webserver_url.rstrip("/")
    if api_version == "v1":
        return f"{base}/dags/{quote(dag_id, safe='')}/grid?{urlencode({'dag_run_id': run_id})}"
    return f"{base}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def task_ui_url(webserver_url: str, api_version: str, dag_id: str, task_id: str) -> str:
    """One task's page: the grid view with the task selected on Airflow 2, the task page on Airflow 3."""
    base = webserver_url.rstrip("/")
    if api_version == "v1":
        return f"{base}/dags/{quote(dag_id, safe='')}/grid?{urlencode({'task_id': task_id})}"
    return f"{base}/dags/{quote(dag_id, safe='')}/tasks/{quote(task_id, safe='')}"
