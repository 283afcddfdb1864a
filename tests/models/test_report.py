"""The HTML report: one self-contained file, escaped text, embedded images, readable numbers."""

import base64
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from liqrisk.models.plots import pr_curves
from liqrisk.models.report import (
    ReportSection,
    figure_html,
    figure_to_data_uri,
    format_value,
    paragraph,
    table_html,
    write_report,
)

matplotlib.use("Agg")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Links(HTMLParser):
    """Every src and href, and every section id, of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []
        self.ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if key in ("src", "href") and value is not None:
                self.targets.append(value)
            if key == "id" and value is not None:
                self.ids.append(value)


def _small_figure() -> Figure:
    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [0, 1])
    return fig


def test_figure_to_data_uri_is_a_png():
    uri = figure_to_data_uri(_small_figure())
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    assert base64.b64decode(uri[len(prefix):]).startswith(PNG_MAGIC)


def test_figure_to_data_uri_closes_a_pyplot_figure():
    from matplotlib import pyplot as plt

    fig = plt.figure()
    figure_to_data_uri(fig)
    assert not plt.fignum_exists(fig.number)


def test_table_html_formats_numbers_and_missing_values():
    df = pd.DataFrame(
        {
            "model": ["<lgbm>", "rule"],
            "n": [1234567, 89],
            "n_pos": [5.0, math.nan],
            "pr_auc": [0.123456789, math.nan],
            "bad_debt": [1234567.89, 0.000123456],
        }
    )
    out = table_html(df, counts=["n_pos"])
    cells = re.findall(r"<td[^>]*>(.*?)</td>", out)
    assert cells == ["&lt;lgbm&gt;", "1,234,567", "5", "0.1235", "1,234,568",
                     "rule", "89", "–", "–", "0.0001235"]
    assert re.findall(r"<th>(.*?)</th>", out) == ["model", "n", "n_pos", "pr_auc", "bad_debt"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, "–"), (pd.NA, "–"), (pd.NaT, "–"), (np.float64("nan"), "–"), (np.int64(12000), "12,000"),
     (0.5, "0.5"), (1e-7, "1e-07"), (999.96, "1000"), (True, "True"), ("a&b", "a&b")],
)
def test_format_value(value: object, expected: str):
    assert format_value(value) == expected


def test_paragraph_and_caption_are_escaped():
    assert paragraph("p < 1% & rising") == "<p>p &lt; 1% &amp; rising</p>"
    out = figure_html(_small_figure(), caption='PR <"test">')
    assert "<figcaption>PR &lt;&quot;test&quot;&gt;</figcaption>" in out
    assert 'src="data:image/png;base64,' in out


def test_write_report_is_one_self_contained_escaped_file(tmp_path: Path):
    rng = np.random.default_rng(0)
    y = rng.random(200) < 0.1
    sections = [
        ReportSection("Ranking <script>alert(1)</script>", figure_html(
            pr_curves(y, {"model": rng.random(200)}, title="PR"), caption="precision-recall")),
        ReportSection("Metrics & budgets", table_html(pd.DataFrame({"ece": [math.nan]}))),
        ReportSection("Notes", paragraph("see https://example.org <b>later</b>")),
    ]
    meta = {"dataset": "sha256:abc", "MLflow UI": "mlflow ui --backend-store-uri sqlite:///mlflow.db",
            "created": "2025-01-01T00:00Z"}
    out = write_report(tmp_path / "deep" / "report.html", title="Risk <v1>", sections=sections, meta=meta)

    assert out == tmp_path / "deep" / "report.html"
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]
    page = out.read_text(encoding="utf-8")
    assert "<title>Risk &lt;v1&gt;</title>" in page
    assert "Ranking &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>" not in page
    assert "Metrics &amp; budgets" in page and "Notes" in page
    assert "&lt;b&gt;later&lt;/b&gt;" in page
    assert all(v.replace("<", "&lt;") in page for v in meta.values())
    assert "<td>–</td>" in page or '<td class="num">–</td>' in page

    links = _Links()
    links.feed(page)
    images = [t for t in links.targets if t.startswith("data:")]
    assert len(images) == 1 and images[0].startswith("data:image/png;base64,")
    assert not [t for t in links.targets if re.match(r"(?i)\s*(https?:)?//", t)]
    anchors = [t for t in links.targets if t.startswith("#")]
    assert anchors == ["#section-1", "#section-2", "#section-3"]
    assert set(anchors) <= {f"#{i}" for i in links.ids}
    assert "<link" not in page and "@import" not in page and "url(" not in page
