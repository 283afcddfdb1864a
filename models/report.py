"""A self-contained HTML report: one file, inline CSS, figures as PNG data URIs.

The file makes no external request (a Content-Security-Policy forbids any), so it can be
mailed or attached to a ticket and opened offline. Every text goes through
:func:`html.escape`; a :class:`ReportSection` carries an HTML fragment already escaped,
built with :func:`paragraph`, :func:`table_html` and :func:`figure_html`.

Numbers in tables: integers (and the columns named in ``counts``) with thousands separators,
other floats with 4 significant digits (magnitudes of 1,000 and more as whole numbers with
separators, e.g. dollars), missing values as "–".
"""

import base64
import html
import io
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

MISSING = "–"
DPI = 110
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"  # no request leaves the page

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 1100px; margin: 2em auto; padding: 0 1em; }
h1 { margin-bottom: .3em; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: .2em 1em;
          background: #f6f8fa; padding: .8em 1em; border-radius: 4px; }
dl.meta dt { font-weight: 600; }
dl.meta dd { margin: 0; font-family: ui-monospace, Menlo, Consolas, monospace;
             word-break: break-all; }
nav ol { padding-left: 1.5em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border-bottom: 1px solid #e4e4e4; padding: .25em .7em; text-align: left; }
th { background: #f6f8fa; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: 13px; }
""".strip()


@dataclass(frozen=True)
class ReportSection:
    """A title (plain text, escaped on output) and an HTML fragment (escaped already)."""

    title: str
    html: str


def figure_to_data_uri(fig: Figure, *, dpi: int = DPI) -> str:
    """The figure as a ``data:image/png;base64,...`` URI; the figure is closed afterwards."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    plt.close(fig)  # releases pyplot's reference if pyplot made it; no-op otherwise
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def figure_html(fig: Figure, *, caption: str) -> str:
    """``<figure>`` with the embedded PNG and an escaped caption (also the alt text)."""
    text = html.escape(caption)
    return (
        f'<figure><img src="{figure_to_data_uri(fig)}" alt="{text}">'
        f"<figcaption>{text}</figcaption></figure>"
    )


def paragraph(text: str) -> str:
    """``<p>`` with the text escaped."""
    return f"<p>{html.escape(text)}</p>"


def table_html(
    df: pd.DataFrame, *, digits: int = 4, counts: Collection[str] = (), index: bool = False
) -> str:
    """An escaped ``<table>`` of ``df``.

    Parameters
    ----------
    df : DataFrame
    digits : int
        Significant digits of floats below 1,000 in magnitude.
    counts : collection of str
        Float columns that hold counts (e.g. ints turned float by a NaN): shown as integers.
    index : bool
        Show the index as the first column(s).

    Returns
    -------
    str
        Integers with thousands separators, floats as described, NaN/None/NaT as "–".
    """
    frame = df.reset_index() if index else df
    columns = [str(c) for c in frame.columns]
    as_count = [pd.api.types.is_integer_dtype(frame.iloc[:, i]) or name in counts
                for i, name in enumerate(columns)]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in frame.itertuples(index=False, name=None):
        pairs = zip(row, as_count, strict=True)
        cells = "".join(_cell(v, digits=digits, count=c) for v, c in pairs)
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def format_value(value: object, *, digits: int = 4, count: bool = False) -> str:
    """One cell as text (not escaped); see :func:`table_html`."""
    if _missing(value):
        return MISSING
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, Integral):
        return f"{int(value):,}"
    if isinstance(value, Real):
        v = float(value)
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        if count or abs(v) >= 1000:
            return f"{round(v):,}"
        return f"{v:.{digits}g}"
    return str(value)


def write_report(
    path: Path, *, title: str, sections: Sequence[ReportSection], meta: Mapping[str, str]
) -> Path:
    """Write one self-contained HTML file: header with ``meta``, contents, then ``sections``.

    Parameters
    ----------
    path : Path
        The ``.html`` file; its folder is created if missing, an existing file replaced.
    title : str
        Page title and heading (escaped).
    sections : sequence of ReportSection
        In order; each gets an anchor ``section-<i>`` linked from the contents.
    meta : mapping of str to str
        Shown as key/value pairs under the title, e.g. dataset hash, run id, created time,
        the MLflow UI command (escaped).

    Returns
    -------
    Path
        ``path``.
    """
    meta_html = "".join(
        f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(str(v))}</dd>" for k, v in meta.items()
    )
    toc = "".join(
        f'<li><a href="#section-{i}">{html.escape(s.title)}</a></li>'
        for i, s in enumerate(sections, 1)
    )
    body = "\n".join(
        f'<section id="section-{i}"><h2>{html.escape(s.title)}</h2>\n{s.html}\n</section>'
        for i, s in enumerate(sections, 1)
    )
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>
{CSS}
</style>
</head>
<body>
<header>
<h1>{html.escape(title)}</h1>
<dl class="meta">{meta_html}</dl>
</header>
<nav><h2>Contents</h2><ol>{toc}</ol></nav>
<main>
{body}
</main>
</body>
</html>
"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def _cell(value: object, *, digits: int, count: bool) -> str:
    numeric = isinstance(value, Real) and not isinstance(value, bool | np.bool_)
    text = html.escape(format_value(value, digits=digits, count=count))
    return f'<td class="num">{text}</td>' if numeric else f"<td>{text}</td>"


def _missing(value: object) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # arrays and other non-scalars are not "missing"
        return False
