"""The small HTML kit both reports are built from: the page's CSS, escaping, notes, sections, embedded plots.

The run report (``deepstrata.report``) and the inspection page (``deepstrata.inspect.report``)
must look alike and open anywhere with nothing fetched, so they share one stylesheet and one
way of embedding a matplotlib figure (a base64 PNG with no metadata, hence no URLs). Every
text that reaches the page goes through ``esc``; keeping the kit here, apart from either page,
is what lets both import it without importing each other.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1100px; padding: 0 1rem; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
h2 { font-size: 1.2rem; margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .92rem; }
th, td { padding: .3rem .7rem; border-bottom: 1px solid #e5e5e5; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.learned td:first-child { border-left: 3px solid #3b6fb6; }
tr.baseline td:first-child { border-left: 3px solid #bbb; }
pre { background: #f6f6f6; padding: .8rem; overflow-x: auto; font-size: .85rem; }
img, svg { max-width: 100%; height: auto; }
.charts { display: flex; flex-wrap: wrap; gap: .5rem; }
.note { color: #666; font-style: italic; }
.summary { font-size: 1.05rem; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: .15rem 1rem; }
dl.meta dt { font-weight: 600; }
dl.meta dd { margin: 0; }
"""
"""The inline stylesheet of every deepstrata page (no external references)."""


def esc(value: Any) -> str:
    """``value`` as text safe inside HTML, quotes included (so it may also go in an attribute)."""
    return html.escape(str(value), quote=True)


def note_html(text: str) -> str:
    """A short explanatory note (a missing file, a caption), set in the muted ``.note`` style."""
    return f'<p class="note">{esc(text)}</p>'


def section_html(heading: str, body: str, anchor: str) -> str:
    """One ``<section>`` with an ``<h2>`` heading; ``body`` is trusted HTML, the heading and anchor are escaped."""
    return f'<section id="{esc(anchor)}"><h2>{esc(heading)}</h2>{body}</section>'


def figure_img(fig: Any, alt: str) -> str:
    """Render a matplotlib Figure to an <img> tag with a base64 PNG (no metadata, so no URLs)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'
