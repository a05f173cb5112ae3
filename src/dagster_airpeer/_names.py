"""Instance names are unique in a code location: `build_defs_from_airflow_instance` refuses a second one.

An instance's name names its sensor, its cursor, its asset keys and its snapshot file, so two Airflow instances
peered under one name would share a snapshot and a cursor. Dagster refuses the duplicate sensor only when the
definitions are resolved, in a message that does not say why; this check says it at the second call.

The scope is one import of a code location (`dagster dev -f/-m`, a code server, a run worker, `airpeer clean`):
the outermost module being executed by Python's import system when the call is made. Calls made outside any
import (a test, a notebook cell) are not checked: rebuilding a peering there is normal, and Dagster still refuses
two sensors of one name in one `Definitions`. `AirflowInstanceComponent` has its own check, per component tree.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from types import FrameType

from .airflow.errors import AirflowConfigError

# The loaders' `exec_module` runs a module's code; the outermost such frame on the stack is the import of the
# code location (its own imports of sibling modules run inside it).
_EXEC_MODULE = "exec_module"
_BOOTSTRAP_FILES = ("<frozen importlib._bootstrap_external>", "<frozen importlib._bootstrap>")


def _outermost_import(frame: FrameType | None) -> FrameType | None:
    found = None
    while frame is not None:
        code = frame.f_code
        if code.co_name == _EXEC_MODULE and (
            code.co_filename in _BOOTSTRAP_FILES or code.co_filename.endswith(("_bootstrap_external.py",))
        ):
            found = frame
        frame = frame.f_back
    return found


class _ImportClaims:
    """The instance names taken in each import in progress (or recently finished)."""

    #: Imports kept: their frames are held so that a new import cannot reuse a listed frame's id.
    _KEEP = 8

    def __init__(self) -> None:
        self._by_import: OrderedDict[int, tuple[FrameType, dict[str, str]]] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, name: str, where: str, frame: FrameType | None) -> None:
        """Take `name` for the import running `frame`'s call; refuse it if that import took it already."""
        scope = _outermost_import(frame)
        if scope is None:
            return
        with self._lock:
            entry = self._by_import.get(id(scope))
            if entry is None or entry[0] is not scope:
                entry = (scope, {})
                self._by_import[id(scope)] = entry
                while len(self._by_import) > self._KEEP:
                    self._by_import.popitem(last=False)
            names = entry[1]
            other = names.get(name)
            if other is not None:
                raise AirflowConfigError(
                    f"Two Airflow instances in this code location are named '{name}' (peered at {other} and at "
                    f"{where}). Each instance's name must be unique: it names the instance's sensor, its cursor, "
                    "its asset keys and its snapshot. Give one of them another name: AirflowInstance(name=...)."
                )
            names[name] = where


_CLAIMS = _ImportClaims()


def claim_instance_name(name: str, *, depth: int = 2) -> None:
    """Refuse a second peering named `name` in the code location being imported (see the module docstring).

    `depth`: how many frames up the user's call is (2: the caller of the function calling this one).
    """
    frame = sys._getframe(depth)
    where = f"{frame.f_code.co_filename}:{frame.f_lineno}"
    _CLAIMS.claim(name, where, frame)
