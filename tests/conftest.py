"""Shared pytest fixtures: real Airflow 3.3 and 2.11 instances started from the project's venvs.

Fixtures
--------
``airflow3`` / ``airflow2``
    Session-scoped :class:`~devtools.airflow_stack.AirflowStack` (Airflow 3.3 / 2.11), started on first use
    and stopped at the end of the session. Every test DAG of ``tests/dags`` is listed before the fixture
    returns (ids in ``devtools.dags.TEST_DAG_IDS``); each stack has its own copy of the DAGs folder
    (``stack.dags_folder``), so a test may add DAG files to it. The instance is shared: DAG runs from
    other tests accumulate, so filter by your own run ids.
``airflow``
    The same two stacks as one fixture parametrized over both versions (ids ``af3`` and ``af2``), for tests
    that must pass on both. It is session-scoped so pytest runs all ``af3`` items, then all ``af2`` items.
``airflow_stack_factory``
    ``factory(major, **kwargs) -> AirflowStack``: a dedicated, started instance for tests that need a clean
    or differently configured Airflow (stopped at the end of the test).

Tests using any of these are marked ``integration`` plus ``airflow3``/``airflow2`` automatically, so
``pytest -m "not integration"`` runs without Airflow. A missing venv fails loudly (run ``make install``).

Parallel runs (``make test`` runs ``pytest -n N --dist loadgroup``): each test also gets an ``xdist_group`` mark
from the expensive fixtures it uses, so that every shared stack is started by one worker only: ``af3`` for the
shared Airflow 3.3 (``airflow3`` or ``airflow[af3]``), ``af2`` for the shared Airflow 2.11, ``tutorial`` for
the demo stack of tests/examples, and one group per module for a module whose tests share a module-scoped
fixture (the tiny benchmark run, for instance). Everything else, ``airflow_stack_factory`` tests included
(each starts its own instance on free ports), spreads over the workers. A test that needs both shared stacks
goes to ``af3`` and starts a second Airflow 2.11 on that worker: give it a dedicated stack or split it.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.airflow_stack import AIRFLOW2_VENV, AIRFLOW3_VENV, AirflowStack, AirflowStackError
from devtools.dags import TEST_DAG_IDS, TEST_DAGS_DIR

_VENVS = {3: AIRFLOW3_VENV, 2: AIRFLOW2_VENV}
_LABELS = {3: "Airflow 3.3", 2: "Airflow 2.11"}
_STACK_FIXTURES = {"airflow3": 3, "airflow2": 2}


def _require_venv(major: int) -> None:
    airflow_bin = _VENVS[major] / "bin" / "airflow"
    if not airflow_bin.exists():
        pytest.fail(
            f"{_LABELS[major]} is not installed ({airflow_bin} is missing): run `make install`",
            pytrace=False,
        )


def _new_stack(major: int, base: Path, **kwargs: Any) -> AirflowStack:
    """Create and start a stack whose home and DAGs folder live under ``base``."""
    _require_venv(major)
    dags = base / "dags"
    shutil.copytree(TEST_DAGS_DIR, dags, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    kwargs.setdefault("dags_folder", dags)
    stack = AirflowStack(major=major, home=base / "home", **kwargs)
    try:
        stack.start()
        stack.wait_for_dags(TEST_DAG_IDS)
    except AirflowStackError as exc:
        stack.stop()
        pytest.fail(f"{_LABELS[major]} did not start: {exc}", pytrace=False)
    return stack


@pytest.fixture(scope="session")
def airflow3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    """A real Airflow 3.3 shared by the whole session (REST /api/v2, JWT auth, admin:admin)."""
    stack = _new_stack(3, tmp_path_factory.mktemp("airflow3"))
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def airflow2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    """A real Airflow 2.11 shared by the whole session (REST /api/v1, basic auth, admin:admin)."""
    stack = _new_stack(2, tmp_path_factory.mktemp("airflow2"))
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(
    scope="session",
    params=[
        pytest.param(3, id="af3", marks=[pytest.mark.integration, pytest.mark.airflow3]),
        pytest.param(2, id="af2", marks=[pytest.mark.integration, pytest.mark.airflow2]),
    ],
)
def airflow(request: pytest.FixtureRequest) -> AirflowStack:
    """The shared Airflow 3.3 (``af3``) and then the shared Airflow 2.11 (``af2``)."""
    stack: AirflowStack = request.getfixturevalue("airflow3" if request.param == 3 else "airflow2")
    return stack


@pytest.fixture
def airflow_stack_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., AirflowStack]]:
    """Return ``factory(major, **AirflowStack kwargs)`` making dedicated started stacks, stopped after the test."""
    stacks: list[AirflowStack] = []

    def factory(major: int, **kwargs: Any) -> AirflowStack:
        stack = _new_stack(major, tmp_path_factory.mktemp(f"airflow{major}-own"), **kwargs)
        stacks.append(stack)
        return stack

    try:
        yield factory
    finally:
        for stack in stacks:
            stack.stop()


def _shared_stacks(item: pytest.Item, names: set[str]) -> set[int]:
    """The majors of the shared session stacks a test uses (``airflow`` picks its stack by parameter)."""
    majors = {major for fixture, major in _STACK_FIXTURES.items() if fixture in names}
    callspec = getattr(item, "callspec", None)
    if "airflow" in names and callspec is not None and callspec.params.get("airflow") in _VENVS:
        majors.add(callspec.params["airflow"])
    return majors


def _xdist_group(item: pytest.Item, names: set[str]) -> str | None:
    """The worker group of a test (see the module docstring), or None to let it run on any worker."""
    majors = _shared_stacks(item, names)
    if majors:
        return "af3" if 3 in majors else "af2"
    if "tutorial_stacks" in names:
        return "tutorial"
    fixture_info = getattr(item, "_fixtureinfo", None)
    if fixture_info is not None:
        for definitions in fixture_info.name2fixturedefs.values():
            if definitions and definitions[-1].scope in ("module", "class", "package"):
                return f"module:{item.nodeid.split('::', 1)[0]}"
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by the Airflow fixtures they use, before ``-m`` selection runs and before pytest-xdist
    turns the ``xdist_group`` marks into work units."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        for fixture, major in _STACK_FIXTURES.items():
            if fixture in names:
                item.add_marker(pytest.mark.integration)
                item.add_marker(pytest.mark.airflow3 if major == 3 else pytest.mark.airflow2)
        if "airflow" in names or "airflow_stack_factory" in names:
            item.add_marker(pytest.mark.integration)
        group = _xdist_group(item, names)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


#: Node ids of tests on a shared stack look like this (``airflow`` is parametrized af3/af2).
_GROUPED_ID = re.compile(r"\[(?:[^\]]*-)?af[23](?:-[^\]]*)?\]$")


class _GroupsCheck:
    """Stops a ``--dist loadgroup`` run whose groups do not take effect (see the hook's docstring)."""

    @pytest.hookimpl
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """On the controller, once a worker has collected: stop if the ``@group`` suffixes are missing.

        pytest-xdist's loadgroup tells its scheduler an item's group by appending ``@group`` to the node id.
        When a pytest release changes how node ids are stored, that silently stops working
        (pytest-dev/pytest-xdist#1386, pytest 9.2): every worker then starts its own shared Airflow stacks,
        the suite takes twice as long and the stacks starve each other.
        """
        # Some tests have af3/af2 ids of their own and no group: a working loadgroup marks the others.
        lost = [i for i in ids if _GROUPED_ID.search(i)]
        if lost and not any("@" in i for i in ids):
            pytest.exit(
                f"pytest-xdist's --dist loadgroup did not group {len(lost)} tests (first: {lost[0]}) under "
                f"pytest {pytest.__version__}: each worker would start its own Airflow stacks. Install the "
                "pytest that pyproject.toml's `test` extra allows (`make install`), or run with "
                "PYTEST_WORKERS=0.",
                returncode=pytest.ExitCode.USAGE_ERROR,
            )


def pytest_configure(config: pytest.Config) -> None:
    """On the controller of a ``--dist loadgroup`` run, check that the groups take effect."""
    if config.pluginmanager.hasplugin("xdist") and config.getoption("dist", None) == "loadgroup":
        config.pluginmanager.register(_GroupsCheck(), "airpeer-xdist-groups-check")
