"""Charts for the operator floor as inline SVG, drawn on the server (no script, no library).

Each chart is a horizontal bar chart: one row per team or domain, bars stacked by series. The
SVG carries ``role="img"``, a ``<title>`` and a ``<desc>`` that says the numbers in words, so a
screen reader gets the same facts; colours come from classes in ``console.css`` (the CSP allows
no inline styles) and every series also differs in pattern of position, never by colour alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import count

from markupsafe import Markup, escape

ROW_HEIGHT = 28
BAR_HEIGHT = 18
LABEL_WIDTH = 200
PLOT_WIDTH = 340
VALUE_WIDTH = 100
TOP = 30  # room for the legend
_ids = count(1)


@dataclass(frozen=True)
class Row:
    label: str
    values: Sequence[float]
    # A reference mark drawn across the bar (a team's capacity), or None.
    mark: float | None = None
    note: str = ""


def bar_chart(
    *,
    title: str,
    rows: Sequence[Row],
    series: Sequence[str],
    unit: str = "",
    fmt: str = "{:g}",
    mark_label: str | None = None,
) -> Markup:
    """A stacked horizontal bar chart; ``series`` names the stacked parts in order."""
    chart_id = f"chart-{next(_ids)}"
    if not rows:
        return Markup('<p class="empty">Nothing to show yet.</p>')
    top = max([sum(r.values) for r in rows] + [r.mark or 0 for r in rows] + [1.0])
    scale = PLOT_WIDTH / top
    height = TOP + ROW_HEIGHT * len(rows) + 6
    width = LABEL_WIDTH + PLOT_WIDTH + VALUE_WIDTH
    described = "; ".join(_describe(r, series, unit, fmt, mark_label) for r in rows)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-labelledby="{chart_id}-t {chart_id}-d" preserveAspectRatio="xMinYMin meet">',
        f'<title id="{chart_id}-t">{escape(title)}</title>',
        f'<desc id="{chart_id}-d">{escape(described)}</desc>',
    ]
    x = LABEL_WIDTH
    for index, name in enumerate(series):
        parts.append(
            f'<rect class="s{index}" x="{x}" y="6" width="14" height="14"/>'
            f'<text class="legend" x="{x + 18}" y="18">{escape(name)}</text>'
        )
        x += 26 + 9 * len(name)
    if mark_label:
        parts.append(
            f'<line class="mark" x1="{x}" y1="4" x2="{x}" y2="20"/>'
            f'<text class="legend" x="{x + 6}" y="18">{escape(mark_label)}</text>'
        )
    for i, row in enumerate(rows):
        y = TOP + i * ROW_HEIGHT
        label = row.label if len(row.label) <= 24 else row.label[:23] + "…"
        parts.append(
            f'<text class="label" x="{LABEL_WIDTH - 8}" y="{y + BAR_HEIGHT - 3}" '
            f'text-anchor="end">{escape(label)}</text>'
        )
        x0 = float(LABEL_WIDTH)
        for index, value in enumerate(row.values):
            w = max(0.0, value * scale)
            if w > 0:
                parts.append(
                    f'<rect class="s{index}" x="{x0:.1f}" y="{y}" width="{w:.1f}" '
                    f'height="{BAR_HEIGHT}"><title>{escape(row.label)}: {escape(series[index])} '
                    f"{escape(fmt.format(value))}{escape(unit)}</title></rect>"
                )
            x0 += w
        if row.mark is not None:
            mx = LABEL_WIDTH + row.mark * scale
            parts.append(
                f'<line class="mark" x1="{mx:.1f}" y1="{y - 3}" x2="{mx:.1f}" '
                f'y2="{y + BAR_HEIGHT + 3}"/>'
            )
        total = fmt.format(sum(row.values)) + unit
        note = f" {row.note}" if row.note else ""
        parts.append(
            f'<text class="value" x="{LABEL_WIDTH + PLOT_WIDTH + 6}" y="{y + BAR_HEIGHT - 3}">'
            f"{escape(total)}{escape(note)}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _describe(row: Row, series: Sequence[str], unit: str, fmt: str, mark_label: str | None) -> str:
    """One row in words, for the chart's ``<desc>``."""
    parts = [f"{name} {fmt.format(v)}{unit}" for name, v in zip(series, row.values, strict=False)]
    if row.mark is not None and mark_label:
        parts.append(f"{mark_label} {fmt.format(row.mark)}{unit}")
    return f"{row.label}: " + ", ".join(parts)
