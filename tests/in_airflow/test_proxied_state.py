"""Proxied-state YAML: the two forms, and errors that name the file and the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagster_airpeer.in_airflow.proxied_state import ProxiedStateError, load_proxied_state_from_yaml


def _dir(tmp_path: Path, **files: str) -> Path:
    for name, text in files.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    return tmp_path


def test_tasks_list_and_whole_dag_forms(tmp_path: Path) -> None:
    state = load_proxied_state_from_yaml(
        _dir(
            tmp_path,
            some="tasks:\n  - id: a\n    proxied: true\n  - id: b\n    proxied: false\n",
            whole="proxied: true\n",
        )
    )
    assert state.is_task_proxied("some", "a")
    assert not state.is_task_proxied("some", "b")
    assert not state.is_task_proxied("some", "unlisted")
    assert state.is_task_proxied("whole", "anything")
    assert not state.is_task_proxied("no_file", "a")
    assert state.for_dag("some") is not None and state.for_dag("some").task_lines == {"a": 2, "b": 4}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "line", "match"),
    [
        (
            "tasks:\n  - id: a\n    proxied: true\n  - id: b\n    proxied: maybe\n",
            5,
            r"tasks\.1\.proxied: Input should be a valid boolean",
        ),
        ("tasks:\n  - id: a\n    proxied: true\n  - id: b\n", 4, r"tasks\.1\.proxied: Field required"),
        ("tasks:\n  - id: a\n    proxid: true\n", 3, r"tasks\.0\.proxid: Extra inputs are not permitted"),
        ("tasks:\n  - id: a\n    proxied: true\n  - id: a\n    proxied: false\n", 4, "listed twice"),
        ("tasks:\n  - id: a\n    proxied: [true\n", 4, "not valid YAML"),
        ("proxied: true\ntasks:\n  - id: a\n    proxied: true\n", 1, "not both"),
        ("", 1, "empty file"),
        ("- a\n- b\n", 1, "expected a mapping"),
    ],
)
def test_errors_name_the_file_and_line(tmp_path: Path, text: str, line: int, match: str) -> None:
    directory = _dir(tmp_path, my_dag=text)
    with pytest.raises(ProxiedStateError, match=match) as err:
        load_proxied_state_from_yaml(directory)
    assert str(err.value).startswith(f"{directory / 'my_dag.yaml'}:{line}: "), str(err.value)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ProxiedStateError, match="does not exist"):
        load_proxied_state_from_yaml(tmp_path / "nope")
