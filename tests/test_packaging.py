"""What the package declares: the lower bounds of its dependencies hold what the code relies on.

`make test` also runs this file in `.venvs/dagster-min`, installed with uv's `--resolution lowest-direct`
(mk/compat.mk) with every extra, where every direct dependency sits at the lowest version pyproject.toml allows; there
``AIRPEER_LOWEST_DIRECT=1`` makes the test below check that the venv really holds those minimums.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_fixed

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the venvs here run 3.11
    tomllib = pytest.importorskip("tomli")

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _declared() -> dict[str, list[Requirement]]:
    """The runtime dependencies and every extra's, by group."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    groups = {"dependencies": [Requirement(r) for r in project["dependencies"]]}
    for extra, requirements in project["optional-dependencies"].items():
        groups[extra] = [Requirement(r) for r in requirements]
    return groups


def _minimum(requirement: Requirement) -> Version:
    lows = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==", "~=")]
    assert lows, f"{requirement} in pyproject.toml has no lower bound"
    return max(lows)


def test_every_direct_dependency_has_a_lower_bound_and_the_venv_meets_it() -> None:
    lowest = os.environ.get("AIRPEER_LOWEST_DIRECT") == "1"
    for group, requirements in _declared().items():
        for requirement in requirements:
            try:
                installed = Version(version(requirement.name))
            except PackageNotFoundError:
                # An extra may be left out of a venv; the compat venv installs every one (mk/compat.mk).
                assert not lowest, f"{requirement.name} ({group}) is not installed"
                continue
            minimum = _minimum(requirement)
            assert installed in requirement.specifier, f"{requirement.name} {installed} ({group})"
            if lowest:
                # The compat venv must test the minimums, not whatever the resolver prefers.
                assert installed == minimum, f"{requirement.name} is {installed}, lowest allowed {minimum}"


def test_tenacity_lower_bound_computes_the_wait_before_the_stop() -> None:
    """`_StopAtDeadline` (airflow/_retry.py) reads `upcoming_sleep` when tenacity asks it whether to stop:
    the wait must already be known then, which tenacity does from 8.3 on."""
    tenacity = next(r for r in _declared()["dependencies"] if r.name == "tenacity")
    assert _minimum(tenacity) >= Version("8.3")

    seen: list[float] = []

    def stop(state: RetryCallState) -> bool:
        seen.append(state.upcoming_sleep)
        return stop_after_attempt(3)(state)

    attempts = 0

    def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionError("not yet")
        return "ok"

    retrying = Retrying(
        stop=stop, wait=wait_fixed(7), retry=retry_if_exception_type(ConnectionError), sleep=lambda _s: None
    )
    assert retrying(flaky) == "ok"
    assert seen == [7.0, 7.0]


def _imports_at_runtime(path: Path, package: str) -> set[str]:
    """Absolute names of the modules `path` imports when it runs (`if TYPE_CHECKING:` blocks left out)."""
    import ast

    tree = ast.parse(path.read_text())
    is_init = path.name == "__init__.py"
    here = package if is_init else package.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = here.split(".")[: len(here.split(".")) - (child.level - 1)]
                    name = ".".join([*base, *([child.module] if child.module else [])])
                    found.add(name)
                    # `from . import x` may name a submodule.
                    found.update(f"{name}.{alias.name}" for alias in child.names)
                elif child.module:
                    found.add(child.module)
            visit(child)

    visit(tree)
    return found


def test_the_airflow_side_needs_only_the_dependencies_airflow_already_has() -> None:
    """What `pip install --no-deps dagster-airpeer` in Airflow's environment relies on (README, "Migrate"):
    dagster_airpeer.in_airflow and every airpeer module it reaches import only the standard library, Airflow and
    the declared dependencies other than Dagster, all of which Airflow 2.11 and 3.x install themselves."""
    src = PYPROJECT.parent / "src"
    declared = {r.name.lower() for r in _declared()["dependencies"]} - {"dagster"}
    assert declared == {"httpx", "pydantic", "tenacity", "pyyaml"}
    third_party = {"httpx": "httpx", "pydantic": "pydantic", "tenacity": "tenacity", "yaml": "pyyaml"}

    def file_of(module: str) -> Path | None:
        base = src.joinpath(*module.split("."))
        for candidate in (base / "__init__.py", base.with_suffix(".py")):
            if candidate.exists():
                return candidate
        return None

    # in_airflow's __init__ imports its names on first use (importlib), so every module of it is a start.
    starts = [
        f"dagster_airpeer.in_airflow.{p.stem}" for p in (src / "dagster_airpeer" / "in_airflow").glob("*.py")
    ]
    todo, seen, outside = ["dagster_airpeer.in_airflow", *starts], set[str](), dict[str, str]()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = file_of(module)
        if path is None:
            continue
        # Importing a submodule imports its packages first.
        parts = module.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        for name in _imports_at_runtime(path, module):
            top = name.split(".")[0]
            if top == "dagster_airpeer":
                todo.append(name)
            elif top not in sys.stdlib_module_names and top not in ("airflow", "__future__"):
                outside.setdefault(top, module)
    assert "dagster_airpeer.in_airflow.proxied_state" in seen and "dagster_airpeer" in seen
    assert set(outside) <= set(third_party), f"undeclared for the Airflow side: {outside}"
    assert {third_party[t] for t in outside} <= declared
