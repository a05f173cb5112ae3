"""The component-loads section of the report page (benchmarks/component_loads.py), without Airflow: written between
its markers, replaced by a later run, and kept by benchmarks/report.py when it rewrites the page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks import report
from benchmarks.component_loads import END, START, write_section

SOAK = "## Soak (`make soak`)\n\n<!-- soak:start -->\nsoak figures\n<!-- soak:end -->\n"


def _result(seconds: float) -> dict[str, Any]:
    case = {"seconds": [seconds], "median_s": seconds, "requests": [0], "endpoints": {}}
    return {
        "airflow": "Airflow 3.3",
        "dags": 1000,
        "started": "2026-12-02T07:00:00+00:00",
        "machine": {"load": [1.0, 1.0, 1.0]},
        "run_worker_load": case,
        "code_server_reload": {**case, "requests": [3], "endpoints": {"GET /api/v2/dags": 1}},
        "state_bytes": 4096,
    }


def test_the_section_goes_before_the_soak_block_and_a_later_run_replaces_it(tmp_path: Path) -> None:
    page = tmp_path / "BENCHMARKS.md"
    page.write_text("# Benchmarks\n\n## Targets\n\nrows\n\n" + SOAK)
    write_section(page, [_result(1.25)])
    text = page.read_text()
    assert text.index(START) < text.index("## Soak") and text.endswith(SOAK)
    assert "| Airflow 3.3 | 1000 | run worker load from state | 0 | 1.25 |" in text
    write_section(page, [_result(2.5)])
    text = page.read_text()
    assert text.count(START) == 1 and text.count(END) == 1 and "1.25" not in text and "| 2.50 |" in text


@pytest.mark.parametrize("partial", [False, True])
def test_the_report_keeps_the_section_when_it_rewrites_the_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, partial: bool
) -> None:
    page = tmp_path / "BENCHMARKS.md"
    page.write_text("# Benchmarks\n\n## Targets\n\nold rows\n\n" + SOAK)
    write_section(page, [_result(1.25)])
    section = page.read_text().split(START)[1].split(END)[0]
    monkeypatch.setattr(report, "render", lambda results: "# Benchmarks\n\n## Targets\n\nnew rows\n")
    report.write_report(page, {"partial": partial})
    text = page.read_text()
    assert text.count(START + section + END) == 1
    assert "new rows" in text and text.index(END) < text.index("## Soak") and text.endswith(SOAK)
