"""Fixtures of the tutorial tests: one demo stack shared by the browser test and the end-to-end test.

The end-to-end test stops the stack as its last step (that is what it checks); a test that comes later gets a
new one. See tutorial_helpers.py for what the stack is.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tutorial_helpers import PYTHON, TutorialStack, TutorialStackManager


@pytest.fixture(scope="session")
def tutorial_stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TutorialStackManager]:
    """The session's demo stacks (at most one running at a time)."""
    if not PYTHON.exists():
        pytest.fail(f"{PYTHON} is missing: run `make install`", pytrace=False)
    manager = TutorialStackManager(tmp_path_factory.mktemp("tutorial"))
    yield manager
    manager.close()


@pytest.fixture
def tutorial_stack(tutorial_stacks: TutorialStackManager) -> TutorialStack:
    """A running demo stack, shared by the tutorial tests."""
    return tutorial_stacks.get()
