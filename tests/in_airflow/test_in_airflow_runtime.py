"""`dagster_airpeer.in_airflow` inside Airflow's own environment, which has no Dagster.

Each case runs a Python subprocess of a venv without Dagster, with `PYTHONPATH=src` (the package as a user's
Airflow would import it) and `AIRFLOW_HOME` in a temp dir: it imports the package, parses the DAG folder
`tests/in_airflow/dags` with Airflow's DagBag and reports back as JSON. Airflow 2.11 is `.venvs/airflow2`
(made by `make install`); Airflow 3.3 is `.venvs/airflow3-nodagster`, made from uv's cache in ~15 s:

    uv pip freeze -p .venv/bin/python | grep -v -i '^dagster\\|^-e\\|@ file' > /tmp/af3.txt
    uv venv -p 3.11 .venvs/airflow3-nodagster
    uv pip install --offline --compile-bytecode -p .venvs/airflow3-nodagster/bin/python -c /tmp/af3.txt \\
        apache-airflow==3.3.2 apache-airflow-providers-standard httpx tenacity pydantic pyyaml

and the 3.3 cases are skipped when it is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "tests" / "in_airflow" / "dags"
VENVS = {2: ROOT / ".venvs" / "airflow2", 3: ROOT / ".venvs" / "airflow3-nodagster"}

PARSE = textwrap.dedent(
    """
    import json, sys
    import dagster_airpeer.in_airflow
    from dagster_airpeer.in_airflow import DagsterProxyOperator, load_proxied_state_from_yaml, proxying_to_dagster
    after_import = sorted(m for m in sys.modules if m == "dagster" or m.startswith("dagster."))
    try:
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(sys.argv[1])
    except ImportError:
        from airflow.models.dagbag import DagBag
        bag = DagBag(sys.argv[1], include_examples=False)
    out = {"after_import": after_import, "errors": {k: str(v) for k, v in bag.import_errors.items()}, "tasks": {}}
    dag = bag.dags.get("airpeer_proxied")
    for task in dag.tasks if dag else []:
        out["tasks"][task.task_id] = {
            "class": type(task).__name__,
            "proxied": isinstance(task, DagsterProxyOperator),
            "retries": task.retries,
            "pool": task.pool,
            "trigger_rule": str(getattr(task.trigger_rule, "value", task.trigger_rule)),
            "group": task.task_group.group_id if task.task_group else None,
            "downstream": sorted(task.downstream_task_ids),
            "callbacks": bool(task.on_failure_callback),
        }
    out["after_parse"] = sorted(m for m in sys.modules if m == "dagster" or m.startswith("dagster."))
    print("RESULT" + json.dumps(out))
    """
)


def _run(major: int, tmp_path: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    python = VENVS[major] / "bin" / "python"
    if not python.exists():
        pytest.skip(
            f"{VENVS[major]} (Airflow {major} without Dagster) is not made; see this module's docstring"
        )
    home = tmp_path / "airflow_home"
    home.mkdir(exist_ok=True)
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHON", "VIRTUAL_ENV"))},
        "PYTHONPATH": str(ROOT / "src"),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        **(env or {}),
    }
    done = subprocess.run(
        [str(python), "-c", PARSE, str(DAGS)], env=full_env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT"))
    result: dict[str, Any] = json.loads(line[len("RESULT") :])
    return result


@pytest.mark.parametrize("major", [2, 3])
def test_imports_and_parses_without_dagster_keeping_the_dag(major: int, tmp_path: Path) -> None:
    out = _run(major, tmp_path)
    assert out["after_import"] == [] and out["after_parse"] == []
    assert out["errors"] == {}
    tasks = out["tasks"]
    assert {t for t, v in tasks.items() if v["proxied"]} == {"load", "transform.clean", "export"}
    assert tasks["load"]["class"] == "PythonOperatorProxiedToDagster"
    assert (
        tasks["load"]["retries"] == 3
        and tasks["load"]["pool"] == "default_pool"
        and tasks["load"]["callbacks"]
    )
    assert tasks["transform.clean"]["group"] == "transform"
    assert tasks["export"]["trigger_rule"] == "all_done"
    assert tasks["export"]["downstream"] == ["fan", "report"]
    assert tasks["load"]["downstream"] == ["transform.clean"]
    assert not tasks["fan"]["proxied"] and not tasks["report"]["proxied"]


@pytest.mark.parametrize("major", [2, 3])
@pytest.mark.parametrize(
    ("text", "line", "match"),
    [
        (
            "tasks:\n  - id: load\n    proxied: true\n  - id: lod\n    proxied: true\n",
            4,
            "task 'lod' is not in DAG",
        ),
        (
            "tasks:\n  - id: load\n    proxied: false\n  - id: fan\n    proxied: true\n",
            4,
            "mapped (.expand) task",
        ),
        ("tasks:\n  - id: load\n    proxied: yes please\n", 3, "valid boolean"),
        ("proxied: true\n", 1, "mapped (.expand) task"),
    ],
)
def test_bad_state_is_an_import_error_naming_file_and_line(
    major: int, tmp_path: Path, text: str, line: int, match: str
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "airpeer_proxied.yaml").write_text(text)
    out = _run(major, tmp_path, {"AIRPEER_TEST_PROXIED_STATE": str(state)})
    (error,) = out["errors"].values()
    assert f"{state / 'airpeer_proxied.yaml'}:{line}: " in error
    assert match in error
    assert out["after_parse"] == []
