"""Small SVG line charts for Markdown metadata (loss curves), without a plotting dependency.

The Dagster UI renders Markdown metadata; an SVG embedded as a data URI shows the curve on the
asset page next to the numbers. Scales are linear, the y axis starts at the data's minimum.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

COLOURS = ("#4f46e5", "#dc2626", "#059669", "#d97706")


def line_chart_svg(series: dict[str, Sequence[tuple[float, float]]], *, width: int = 560, height: int = 240,
                   x_label: str = "step", y_label: str = "loss") -> str:
    points = [p for s in series.values() for p in s]
    if not points:
        raise ValueError("nothing to plot")
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    left, right, top, bottom = 52, 12, 12, 34
    w, h = width - left - right, height - top - bottom

    def xy(x: float, y: float) -> str:
        return f"{left + (x - x0) / (x1 - x0) * w:.1f},{top + (1 - (y - y0) / (y1 - y0)) * h:.1f}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="11">',
             f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#ccc"/>']
    for i in range(5):
        y = y0 + (y1 - y0) * i / 4
        parts.append(f'<text x="{left - 4}" y="{top + (1 - i / 4) * h + 4:.1f}" text-anchor="end">{y:.3g}</text>')
    parts.append(f'<text x="{left}" y="{height - 18}">{x0:g}</text>')
    parts.append(f'<text x="{left + w}" y="{height - 18}" text-anchor="end">{x1:g}</text>')
    parts.append(f'<text x="{left + w / 2}" y="{height - 4}" text-anchor="middle">{x_label}</text>')
    for i, (name, s) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        if len(s) > 1:
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" '
                         f'points="{" ".join(xy(x, y) for x, y in s)}"/>')
        for x, y in s if len(s) <= 20 else []:
            parts.append(f'<circle cx="{xy(x, y).split(",")[0]}" cy="{xy(x, y).split(",")[1]}" r="2.5" fill="{colour}"/>')
        parts.append(f'<text x="{left + w - 8}" y="{top + 14 + 13 * i}" fill="{colour}" text-anchor="end">{name}</text>')
    parts.append(f'<text x="12" y="{top + h / 2}" transform="rotate(-90 12 {top + h / 2})" '
                 f'text-anchor="middle">{y_label}</text></svg>')
    return "".join(parts)


def markdown_image(svg: str, alt: str = "chart") -> str:
    return f"![{alt}](data:image/svg+xml;base64,{base64.b64encode(svg.encode()).decode()})"
