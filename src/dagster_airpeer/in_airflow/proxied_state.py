"""Which Airflow tasks are proxied to Dagster: one YAML file per DAG, `<dag_id>.yaml`, in one directory.

```yaml
# proxied_state/rebuild_customers_list.yaml
tasks:
  - id: load_raw_customers
    proxied: true
  - id: build_dbt_models
    proxied: false
```

or, for every task of the DAG, `proxied: true` alone. Flipping a task back to `false` is the rollback.
Errors name the file and the line (`ProxiedStateError`), since they surface when Airflow parses the DAG file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# PyYAML ships no type hints (types-PyYAML is not a dependency); yaml's nodes are used through Any.
import yaml  # type: ignore[import-untyped,unused-ignore]
from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr, ValidationError, model_validator


class ProxiedStateError(ValueError):
    """A proxied-state file is malformed or does not fit its DAG; the message starts with `file:line:`."""


class TaskProxiedState(BaseModel):
    """One task's entry: `{id: <task_id>, proxied: true|false}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: StrictStr
    proxied: StrictBool


class DagProxiedState(BaseModel):
    """One DAG's file: a list of tasks, or `proxied: true|false` for the whole DAG (not both)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    proxied: StrictBool | None = None
    tasks: tuple[TaskProxiedState, ...] = ()

    @model_validator(mode="after")
    def _one_form(self) -> DagProxiedState:
        if self.proxied is not None and self.tasks:
            raise ValueError(
                "give either `proxied: true|false` for the whole DAG or a `tasks:` list, not both"
            )
        return self


@dataclass(frozen=True)
class DagProxiedFile:
    """A DAG's proxied state with where it was read, for errors that point at a line."""

    dag_id: str
    path: Path
    state: DagProxiedState
    #: task id -> the line (1-based) of its entry.
    task_lines: Mapping[str, int] = field(default_factory=dict)

    def is_task_proxied(self, task_id: str) -> bool:
        """Whether `task_id` runs in Dagster: its own entry, or the whole DAG's `proxied: true`."""
        if self.state.proxied is not None:
            return self.state.proxied
        return any(t.id == task_id and t.proxied for t in self.state.tasks)

    def error(self, task_id: str | None, message: str) -> ProxiedStateError:
        """An error located at `task_id`'s entry (or the file's first line)."""
        line = self.task_lines.get(task_id, 1) if task_id is not None else 1
        return ProxiedStateError(f"{self.path}:{line}: {message}")


@dataclass(frozen=True)
class ProxiedState:
    """Every DAG's proxied state read from one directory, by dag_id."""

    dags: Mapping[str, DagProxiedFile] = field(default_factory=dict)

    def for_dag(self, dag_id: str) -> DagProxiedFile | None:
        """The state of `dag_id`, or None when the directory has no file for it (nothing proxied)."""
        return self.dags.get(dag_id)

    def is_task_proxied(self, dag_id: str, task_id: str) -> bool:
        """Whether task `task_id` of DAG `dag_id` runs in Dagster."""
        state = self.dags.get(dag_id)
        return state is not None and state.is_task_proxied(task_id)


def _node_at(node: yaml.Node, loc: Sequence[int | str]) -> yaml.Node:
    """The deepest node along pydantic's error location (a missing key stops at its mapping)."""
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = next(
                ((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part), None
            )
            if found is None:
                return node
            key, value = found
            # An unknown key is reported at the key itself.
            node = value if loc[-1] != part else key
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return node
    return node


def _task_lines(root: Any) -> dict[str, list[int]]:
    """Task id -> the lines (1-based) of its entries under `tasks:`."""
    lines: dict[str, list[int]] = {}
    if not isinstance(root, yaml.MappingNode):
        return lines
    for key, value in root.value:
        if isinstance(key, yaml.ScalarNode) and key.value == "tasks" and isinstance(value, yaml.SequenceNode):
            for item in value.value:
                if isinstance(item, yaml.MappingNode):
                    for k, v in item.value:
                        if (
                            isinstance(k, yaml.ScalarNode)
                            and k.value == "id"
                            and isinstance(v, yaml.ScalarNode)
                        ):
                            lines.setdefault(v.value, []).append(item.start_mark.line + 1)
    return lines


def parse_proxied_state_file(path: Path) -> DagProxiedFile:
    """Read and check one `<dag_id>.yaml` file."""
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data: Any = yaml.load(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise ProxiedStateError(f"{path}:{line}: not valid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise ProxiedStateError(f"{path}:1: not valid YAML: {exc}") from None
    if root is None or not isinstance(data, dict):
        raise ProxiedStateError(
            f"{path}:1: expected a mapping, `tasks: [{{id: ..., proxied: true|false}}]` or `proxied: true|false`, "
            f"got {'an empty file' if root is None else type(data).__name__}"
        )
    try:
        state = DagProxiedState.model_validate(data)
    except ValidationError as exc:
        # A misspelt key also makes the right one missing: the misspelling is the error to show.
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        first = errors[0]
        loc = first["loc"]
        line = _node_at(root, loc).start_mark.line + 1
        where = ".".join(str(p) for p in loc) or "file"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ProxiedStateError(f"{path}:{line}: {where}: {first['msg']}{more}") from None
    lines = _task_lines(root)
    for task_id, at in lines.items():
        if len(at) > 1:
            # The second entry's line: the first is where the reader already looks.
            raise ProxiedStateError(
                f"{path}:{at[1]}: task {task_id!r} is listed twice (first at line {at[0]})"
            )
    return DagProxiedFile(
        dag_id=path.stem, path=path, state=state, task_lines={k: v[0] for k, v in lines.items()}
    )


def load_proxied_state_from_yaml(proxied_yaml_path: Path | str) -> ProxiedState:
    """Every `<dag_id>.yaml` of directory `proxied_yaml_path`, checked; a DAG without a file proxies nothing.

    Called at parse time of a DAG file, typically as
    `load_proxied_state_from_yaml(Path(__file__).parent / "proxied_state")`.
    """
    directory = Path(proxied_yaml_path)
    if not directory.is_dir():
        raise ProxiedStateError(f"{directory}: the proxied-state directory does not exist")
    dags = {path.stem: parse_proxied_state_file(path) for path in sorted(directory.glob("*.yaml"))}
    return ProxiedState(dags=dags)
