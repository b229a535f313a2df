"""Markdown tables, report files and PNG plots."""

import pytest

from reasonjax.eval.plots import line_plot
from reasonjax.eval.report import markdown_table, write_report


def test_markdown_table_formats_values():
    table = markdown_table([{"method": "beam", "acc": 0.53125, "ok": True},
                            {"method": "bon", "acc": 0.0001234, "ok": False}])
    assert table.splitlines() == ["| method | acc | ok |", "|---|---|---|",
                                  "| beam | 0.5312 | yes |", "| bon | 1.23e-04 | no |"]
    with pytest.raises(ValueError, match=r"lack column\(s\) \['x'\]"):
        markdown_table([{"a": 1}], ["a", "x"])


def test_report_and_plot_files(tmp_path):
    png = line_plot(tmp_path / "p.png", {"a": ([1, 2, 4], [0.1, 0.2, 0.3])}, xlabel="k",
                    ylabel="coverage", title="t", logx=True,
                    dashed={"fit": ([1, 4], [0.1, 0.3])})
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = write_report(tmp_path / "report.md", "Run", [("Results", "| a |\n|---|\n| 1 |"),
                                                         ("Plot", "![](p.png)")])
    text = report.read_text()
    assert text.startswith("# Run\n") and "## Results" in text and "![](p.png)" in text
