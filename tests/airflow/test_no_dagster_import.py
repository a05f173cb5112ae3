"""The Airflow client stays independent of Dagster: no module under dagster_airpeer/airflow imports
`dagster` or any part of dagster_airpeer outside `dagster_airpeer.airflow` (checked on the source, AST)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "src" / "dagster_airpeer" / "airflow"
MODULES = sorted(PACKAGE_DIR.rglob("*.py"))


def _forbidden_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    # Depth of the module's package below dagster_airpeer.airflow: `from ..x` leaves the package when the
    # number of dots exceeds it.
    depth = len(path.relative_to(PACKAGE_DIR).parts) - 1
    found: list[str] = []

    def check_absolute(name: str, line: int) -> None:
        top = name.split(".")[0]
        if (
            top == "dagster"
            or (top.startswith("dagster_") and top != "dagster_airpeer")
            or (
                top == "dagster_airpeer"
                and not (name == "dagster_airpeer.airflow" or name.startswith("dagster_airpeer.airflow."))
            )
        ):
            found.append(f"{path.name}:{line}: imports {name}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                check_absolute(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                check_absolute(node.module or "", node.lineno)
            elif node.level - 1 > depth:
                found.append(f"{path.name}:{node.lineno}: relative import leaves dagster_airpeer.airflow")
        elif isinstance(node, ast.Call):
            # importlib.import_module("dagster") / __import__("dagster") with a literal name.
            func = node.func
            name = (
                func.attr
                if isinstance(func, ast.Attribute)
                else func.id
                if isinstance(func, ast.Name)
                else ""
            )
            if (
                name in ("import_module", "__import__")
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                value = node.args[0].value
                if isinstance(value, str) and not value.startswith("."):
                    check_absolute(value, node.lineno)
    return found


def test_package_has_modules() -> None:
    assert PACKAGE_DIR.is_dir()
    assert {"__init__.py", "auth.py", "instance.py", "models.py", "errors.py", "managed.py"} <= {
        m.name for m in MODULES
    }


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_module_does_not_import_dagster(module: Path) -> None:
    assert _forbidden_imports(module) == []


def test_the_check_catches_violations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_pkg = tmp_path / "airflow"
    fake_pkg.mkdir()
    bad = fake_pkg / "bad.py"
    bad.write_text(
        "import dagster\n"
        "from dagster import asset\n"
        "from dagster_airpeer.sensor import x\n"
        "from .. import sensor\n"
        "import importlib\n"
        "importlib.import_module('dagster._core')\n"
        "from dagster_airpeer.airflow.models import Dag\n"
        "from . import models\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(__import__(__name__), "PACKAGE_DIR", fake_pkg)
    problems = _forbidden_imports(bad)
    assert len(problems) == 5, problems
