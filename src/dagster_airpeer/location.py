"""Load the user's code location for a command, named as `dagster dev` names it: `-f FILE` or `-m MODULE`.

Importing the definitions runs `build_defs_from_airflow_instance`, which registers every Airflow instance it
peers (registry.py); the commands read that registry, so they use exactly the user's settings (credentials,
DAG selection, sensor settings).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import dagster as dg

from .airflow.errors import AirflowConfigError, AirflowError
from .registry import PeeredInstance, clear_registry, peered_instances

__all__ = ["LoadedLocation", "add_location_arguments", "load_location", "load_location_from_args"]


@dataclass(frozen=True)
class LoadedLocation:
    """What importing a code location told: the Airflow instances it peers and its `Definitions` objects."""

    #: How the location was named, for messages ("file defs.py", "module my_project.defs").
    origin: str
    peered: list[PeeredInstance]
    definitions: tuple[dg.Definitions, ...] = ()


def add_location_arguments(parser: argparse.ArgumentParser) -> None:
    """`--defs/-f FILE` or `-m/--module-name MODULE` (one of them), as `dagster dev` takes them."""
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--defs", "-f", "--python-file", dest="defs_file", metavar="FILE",
        help="the Python file whose definitions peer Airflow (as dagster dev -f)",
    )  # fmt: skip
    group.add_argument(
        "-m", "--module-name", dest="module_name", metavar="MODULE",
        help="the module whose definitions peer Airflow, importable from the current directory (as dagster dev -m)",
    )  # fmt: skip


def load_location_from_args(args: argparse.Namespace) -> LoadedLocation:
    """`load_location` with what `add_location_arguments` parsed."""
    return load_location(defs_file=args.defs_file, module_name=args.module_name)


def load_location(*, defs_file: str | Path | None = None, module_name: str | None = None) -> LoadedLocation:
    """Import a definitions file or module (exactly one) and return the Airflow instances it peers.

    Raises AirflowConfigError, in one line that names the option, when the location cannot be imported or
    peers no Airflow instance.
    """
    if (defs_file is None) == (module_name is None):
        raise AirflowConfigError("name the code location with either --defs FILE or -m MODULE")
    clear_registry()
    if defs_file is not None:
        option, origin, module = "--defs", f"file {defs_file}", _import_file(Path(defs_file))
    else:
        assert module_name is not None
        option, origin, module = "-m", f"module {module_name}", _import_module(module_name)
    found = peered_instances()
    if not found:
        raise AirflowConfigError(
            f"{option}: {origin} does not call build_defs_from_airflow_instance(); no Airflow instance is peered"
        )
    definitions = tuple(v for v in vars(module).values() if isinstance(v, dg.Definitions))
    return LoadedLocation(origin, found, definitions)


def _import_file(path: Path) -> ModuleType:
    path = path.resolve()
    if not path.is_file():
        raise AirflowConfigError(f"--defs: no such file {path}")
    module_name = f"_airpeer_defs_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise AirflowConfigError(f"--defs: {path} is not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    # Like `dagster dev -f`, let the file import its sibling modules.
    sys.path.insert(0, str(path.parent))
    try:
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    except AirflowError:
        raise
    except Exception as exc:  # the user's file: say what failed in one line, not with a traceback
        raise AirflowConfigError(f"--defs: importing {path} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        sys.path.remove(str(path.parent))
    return module


def _import_module(name: str) -> ModuleType:
    # `dagster dev -m` imports from its working directory: put it first on the path, as Dagster does.
    cwd = os.getcwd()
    sys.path.insert(0, cwd)
    try:
        if name in sys.modules:  # imported before in this process: run it again so that it registers again
            return importlib.reload(sys.modules[name])
        return importlib.import_module(name)
    except AirflowError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name is not None and name.startswith(exc.name):
            raise AirflowConfigError(
                f"-m: no module named {name!r} importable from {cwd} (run the command from your project's "
                "directory, or install the project)"
            ) from exc
        raise AirflowConfigError(f"-m: importing {name} failed: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        raise AirflowConfigError(f"-m: importing {name} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        sys.path.remove(cwd)
