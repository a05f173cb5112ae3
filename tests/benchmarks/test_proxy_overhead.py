"""The proxy-overhead section of the report page (benchmarks/proxy_overhead.py), without Airflow: rendered with
signed differences, written between its markers beside the component-loads section, and kept by
benchmarks/report.py when it rewrites the page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks import component_loads, report
from benchmarks.proxy_overhead import END, START, render, write_section

SOAK = "## Soak (`make soak`)\n\n<!-- soak:start -->\nsoak figures\n<!-- soak:end -->\n"


def _case(median: float) -> dict[str, Any]:
    return {"values": [median], "median": median, "min": median, "max": median}


def _result(native_task: float, proxied_task: float) -> dict[str, Any]:
    return {
        "airflow": "Airflow 3.3",
        "runs": 1,
        "started": "2026-12-02T13:00:00+00:00",
        "load": [1.0, 0.5, 0.25],
        "native": {"task_s": _case(native_task), "run_s": _case(native_task + 1)},
        "proxied": {"task_s": _case(proxied_task), "run_s": _case(proxied_task + 1)},
    }


def test_the_row_gives_medians_spreads_and_signed_differences() -> None:
    section = render([_result(2.0, 5.5), _result(3.0, 2.5)], "python -m benchmarks.proxy_overhead --runs 1")
    assert section.startswith(START) and section.endswith(END)
    assert "| Airflow 3.3 | 1 | 2.00 (2.00-2.00) | 5.50 (5.50-5.50) | +3.50 |" in section
    assert "| -0.50 |" in section  # a faster proxied run is shown as such, not as "+-0.50"


@pytest.mark.parametrize("partial", [False, True])
def test_both_marked_sections_survive_a_rewrite_of_the_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, partial: bool
) -> None:
    page = tmp_path / "BENCHMARKS.md"
    page.write_text("# Benchmarks\n\n## Targets\n\nold rows\n\n" + SOAK)
    write_section(page, render([_result(2.0, 5.5)], "cmd"))
    component_loads.write_section(
        page,
        [
            {
                "airflow": "Airflow 3.3",
                "dags": 10,
                "started": "2026-12-02T13:00:00+00:00",
                "machine": {"load": [1.0, 1.0, 1.0]},
                "run_worker_load": {"seconds": [0.1], "median_s": 0.1, "requests": [0], "endpoints": {}},
                "code_server_reload": {"seconds": [0.2], "median_s": 0.2, "requests": [1], "endpoints": {}},
                "state_bytes": 1,
            }
        ],
    )
    write_section(page, render([_result(2.0, 6.5)], "cmd"))  # a later run replaces it in place
    after = page.read_text()
    assert after.count(START) == 1 and "+4.50" in after and "+3.50" not in after
    proxy = START + after.split(START)[1].split(END)[0] + END
    component = component_loads.START + after.split(component_loads.START)[1].split(component_loads.END)[0]
    monkeypatch.setattr(report, "render", lambda results: "# Benchmarks\n\n## Targets\n\nnew rows\n")
    report.write_report(page, {"partial": partial})
    text = page.read_text()
    assert text.count(proxy) == 1 and text.count(component) == 1
    assert "new rows" in text and "old rows" not in text
    assert text.index(END) < text.index("## Soak") and text.endswith(SOAK)


def test_a_section_without_its_markers_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="markers"):
        report.write_marked_section(tmp_path / "BENCHMARKS.md", "## no markers\n")
