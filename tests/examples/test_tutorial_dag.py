"""The tutorial's DAG without a running Airflow: it parses (Airflow 3.3 and 2.11) and its tasks do their job.

Each check runs in a subprocess with its own AIRFLOW_HOME, so importing Airflow here cannot leak into (or pick
up) the state of other tests.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import pytest
from tutorial_helpers import EXAMPLE_DIR

from devtools.airflow_stack import ROOT

DAG_FILE = EXAMPLE_DIR / "airflow_dags" / "rebuild_customers_list.py"
AIRFLOW3_PYTHON = ROOT / ".venv" / "bin" / "python"
AIRFLOW2_PYTHON = ROOT / ".venvs" / "airflow2" / "bin" / "python"

# Prints what the DagBag found, as JSON, for the test to assert on.
_DESCRIBE_DAG = """
import json, sys
try:
    from airflow.dag_processing.dagbag import DagBag  # Airflow 3
except ImportError:
    from airflow.models.dagbag import DagBag  # Airflow 2
bag = DagBag(dag_folder=sys.argv[1])  # AIRFLOW__CORE__LOAD_EXAMPLES=False keeps the examples out
dag = bag.dags.get("rebuild_customers_list")
print(json.dumps({
    "import_errors": {k: str(v) for k, v in bag.import_errors.items()},
    "dag_ids": sorted(bag.dags),
    "tasks": {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks} if dag else {},
    "catchup": dag.catchup if dag else None,
    "paused_at_creation": dag.is_paused_upon_creation if dag else None,
    "max_active_runs": dag.max_active_runs if dag else None,
}))
"""

# Runs the three task callables in order, as the worker would, and prints their return values.
_RUN_TASKS = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("rebuild_customers_list", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
dag = module.rebuild_customers_list()
results = {}
for task_id in ("load_raw_customers", "build_dbt_models", "export_customers"):
    results[task_id] = dag.task_dict[task_id].python_callable()
print("RESULTS " + json.dumps(results))
"""


def _run(python: Path, script: str, *args: str, env: dict[str, str], timeout: float = 300) -> str:
    if not python.exists():
        pytest.fail(f"{python} is missing: run `make install`", pytrace=False)
    result = subprocess.run(
        [str(python), "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "TUTORIAL"))}
    env.update({"AIRFLOW_HOME": str(tmp_path / "airflow_home"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"})
    env.update(extra)
    return env


def _describe(python: Path, tmp_path: Path) -> dict[str, object]:
    out = _run(python, _DESCRIBE_DAG, str(DAG_FILE.parent), env=_env(tmp_path))
    described: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return described


def _assert_dag_shape(described: dict[str, object]) -> None:
    assert described["import_errors"] == {}
    assert described["dag_ids"] == ["rebuild_customers_list"]
    assert described["tasks"] == {
        "load_raw_customers": ["build_dbt_models"],
        "build_dbt_models": ["export_customers"],
        "export_customers": [],
    }
    assert described["catchup"] is False
    assert described["paused_at_creation"] is False
    assert described["max_active_runs"] == 1


def test_dag_parses_on_airflow3(tmp_path: Path) -> None:
    _assert_dag_shape(_describe(AIRFLOW3_PYTHON, tmp_path))


@pytest.mark.integration
@pytest.mark.airflow2
def test_dag_parses_on_airflow2(tmp_path: Path) -> None:
    _assert_dag_shape(_describe(AIRFLOW2_PYTHON, tmp_path))


def test_tasks_load_build_and_export_the_customers(tmp_path: Path) -> None:
    output_dir = tmp_path / "out"
    out = _run(
        AIRFLOW3_PYTHON,
        _RUN_TASKS,
        str(DAG_FILE),
        env=_env(tmp_path, TUTORIAL_OUTPUT_DIR=str(output_dir)),
    )
    results = json.loads(out.split("RESULTS ", 1)[1].strip())
    # 22 rows in the CRM export, two of which are later versions of customers 3 and 5.
    assert results == {"load_raw_customers": 22, "build_dbt_models": None, "export_customers": 20}
    assert "PASS=10" in out  # dbt: 2 models and 8 data tests

    with (output_dir / "customers.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["customer_id"]) for r in rows] == list(range(1, 21))
    by_id = {int(r["customer_id"]): r for r in rows}
    assert by_id[3]["full_name"] == "Amara Okafor-Eze"  # the latest version wins
    assert by_id[5]["email"] == "sofia.lindqvist@example.se"
    assert by_id[2]["email"] == "tomasz.kowal@example.com"  # trimmed
    assert by_id[15]["is_contactable"] == "false"  # no e-mail
    assert {r["country_code"] for r in rows} >= {"FR", "IN", "GB"}
    # dbt's target and logs go to the output directory, not into the example's dbt project.
    assert (output_dir / "dbt_target" / "manifest.json").is_file()
    assert (output_dir / "dbt_logs").is_dir()


def test_a_failed_load_removes_the_previous_export(tmp_path: Path) -> None:
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "customers.csv").write_text("customer_id\n1\n")
    script = _RUN_TASKS.replace(
        'for task_id in ("load_raw_customers", "build_dbt_models", "export_customers"):',
        'for task_id in ("load_raw_customers",):',
    )
    env = _env(
        tmp_path,
        TUTORIAL_OUTPUT_DIR=str(output_dir),
        TUTORIAL_RAW_CUSTOMERS_CSV=str(tmp_path / "nowhere.csv"),
    )
    result = subprocess.run(
        [str(AIRFLOW3_PYTHON), "-c", script, str(DAG_FILE)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "raw customers export not found" in result.stderr
    assert not (output_dir / "customers.csv").exists()
