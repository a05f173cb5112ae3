"""Generate the DAG files of a benchmark: N DAGs of 3 tasks, one DAG per file, as in real projects."""

from __future__ import annotations

from pathlib import Path

DAG_PREFIX = "bench_dag_"
TASK_IDS = ("extract", "transform", "load")

# One file per DAG. Imports work on Airflow 2.11 and 3.3 alike; the schedule is real but every DAG is paused
# at creation, so the scheduler never adds runs next to the seeded ones.
_TEMPLATE = '''"""Benchmark DAG {index} of {total}: extract -> transform -> load."""

from datetime import datetime

try:
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG
try:
    from airflow.providers.standard.operators.empty import EmptyOperator
except ImportError:  # Airflow 2
    from airflow.operators.empty import EmptyOperator

with DAG(
    dag_id="{dag_id}",
    schedule="@daily",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    tags=["bench", "group_{group}"],
    description="benchmark DAG {index}",
):
    extract = EmptyOperator(task_id="extract")
    transform = EmptyOperator(task_id="transform")
    load = EmptyOperator(task_id="load")
    extract >> transform >> load
'''


def dag_id(index: int) -> str:
    """Return the id of DAG number ``index`` (zero-padded so listing order is numeric order)."""
    return f"{DAG_PREFIX}{index:05d}"


def write_dag_files(folder: Path, count: int) -> list[str]:
    """Write ``count`` DAG files into ``folder`` (replacing any previous benchmark DAGs) and return the ids."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"{DAG_PREFIX}*.py"):
        old.unlink()
    ids = []
    for index in range(count):
        ident = dag_id(index)
        text = _TEMPLATE.format(index=index, total=count, dag_id=ident, group=index % 10)
        (folder / f"{ident}.py").write_text(text)
        ids.append(ident)
    return ids
