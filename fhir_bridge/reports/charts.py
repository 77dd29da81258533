"""Outcome charts as SVG: one measure over the visits, reusable by any page that shows it.

Pure string building (no plotting library): the same SVG is inlined in the HTML report and
drawn as vector graphics in the PDF (fpdf2 renders SVG paths, lines, circles and text).
"""

from __future__ import annotations

import math
from html import escape

from fhir_bridge.mapping.outcomes import POST, MeasureSeries, fmt

WIDTH, HEIGHT = 520, 220
LEFT, RIGHT, TOP, BOTTOM, PAD = 48, 16, 36, 38, 24
PRE_COLOUR, POST_COLOUR, GOAL_COLOUR, BAND_COLOUR = "#1f4e79", "#c55a11", "#2e7d32", "#e3eef9"
FONT = 'font-family="Helvetica" font-size="9"'


def svg_chart(series: MeasureSeries) -> str:
    """One measure over the episode as a standalone SVG document (a string).

    Input: one :class:`~fhir_bridge.mapping.outcomes.MeasureSeries` from the outcome engine.
    Drawn: the course (pre-treatment and phase-not-recorded values, joined by a line; hollow
    markers for "phase not recorded"), each visit's post-treatment value (orange, joined to its
    pre value: the immediate effect), the goal target as a dashed green line, and the MCID band
    (light blue): values within one MCID of the baseline, which the course must leave in the
    better direction to count as a clinically important change. The y axis spans the measure's
    range (e.g. 0-10) when the tables give one, and is labelled with the human unit.
    Output: ``<svg ...>...</svg>``, 520 x 220 user units, no scripts, no external references.
    """
    points = series.points
    dates = sorted({p.date for p in points})
    low, high = _y_range(series)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    inner = plot_w - 2 * PAD

    def x(date: str) -> float:
        if len(dates) == 1:
            return LEFT + plot_w / 2
        return LEFT + PAD + inner * dates.index(date) / (len(dates) - 1)

    def y(value: float) -> float:
        return TOP + plot_h * (1 - (value - low) / (high - low))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(series.title)}">',
        f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        f'<text x="{LEFT}" y="11" {FONT} font-weight="bold">{escape(series.title)}</text>',
    ]
    base = series.baseline
    if base is not None and series.mcid and series.mcid.value is not None:
        m = float(series.mcid.value)
        top_v, bottom_v = min(high, base.value + m), max(low, base.value - m)
        parts.append(
            f'<rect x="{LEFT}" y="{y(top_v):.1f}" width="{plot_w}" '
            f'height="{y(bottom_v) - y(top_v):.1f}" fill="{BAND_COLOUR}"/>'
        )
    parts += _axes(low, high, y, series.unit)
    for d in dates:
        parts.append(
            f'<text x="{x(d):.1f}" y="{HEIGHT - BOTTOM + 14}" {FONT} '
            f'text-anchor="middle">{d[5:]}</text>'
        )
    for goal in series.goals:
        gy = y(min(max(goal.target, low), high))
        parts.append(
            f'<line x1="{LEFT}" y1="{gy:.1f}" x2="{WIDTH - RIGHT}" y2="{gy:.1f}" '
            f'stroke="{GOAL_COLOUR}" stroke-width="1.2" stroke-dasharray="5 3"/>'
        )
        parts.append(
            f'<text x="{WIDTH - RIGHT - 2}" y="{gy - 3:.1f}" {FONT} fill="{GOAL_COLOUR}" '
            f'text-anchor="end">goal {escape(series.show(goal.target))}</text>'
        )
    for v in series.visits:
        if v.pre is not None and v.post is not None:
            vx = x(v.date)
            parts.append(
                f'<line x1="{vx:.1f}" y1="{y(v.pre):.1f}" x2="{vx + 8:.1f}" y2="{y(v.post):.1f}" '
                f'stroke="{POST_COLOUR}" stroke-width="1"/>'
            )
    course = [(x(p.date), y(p.value), p) for p in series.course]
    if len(course) > 1:
        line = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy, _ in course)
        parts.append(
            f'<polyline points="{line}" fill="none" stroke="{PRE_COLOUR}" stroke-width="1.6"/>'
        )
    for cx, cy, p in course:
        fill = PRE_COLOUR if p.phase == "pre" else "#ffffff"
        parts.append(
            f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3.2" fill="{fill}" stroke="{PRE_COLOUR}"/>'
        )
        label = fmt(p.value)
        parts.append(
            f'<text x="{cx - 5:.1f}" y="{cy - 6:.1f}" {FONT} text-anchor="end">{label}</text>'
        )
    for p in points:
        if p.phase == POST:
            px, py = x(p.date) + 8, y(p.value)
            parts.append(
                f'<rect x="{px - 3:.1f}" y="{py - 3:.1f}" width="6" height="6" '
                f'fill="{POST_COLOUR}"/>'
            )
    parts += _legend(series)
    parts.append("</svg>")
    return "".join(parts)


def _y_range(series: MeasureSeries) -> tuple[float, float]:
    values = [p.value for p in series.points] + [g.target for g in series.goals]
    if series.scale and series.scale[1] <= 10:
        return series.scale  # short scales (0-10, 0-4) are shown whole
    low, high = min(values), max(values)
    step = _nice_step(max(high - low, 20.0) / 4)  # a 7-degree gain should not fill the chart
    low, high = math.floor(low / step - 0.5) * step, math.ceil(high / step + 0.5) * step
    if series.scale:
        low, high = max(low, series.scale[0]), min(high, series.scale[1])
    return (low, high) if high > low else (low - step, high + step)


def _nice_step(raw: float) -> float:
    """1, 2, 2.5 or 5 times a power of ten, at least ``raw``: ticks people read at a glance."""
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)


def _axes(low: float, high: float, y, unit: str) -> list[str]:
    out = [
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}" stroke="#555"/>',
        f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" y2="{HEIGHT - BOTTOM}" '
        'stroke="#555"/>',
        f'<text x="6" y="{TOP - 10}" {FONT}>{escape("score (0-10)" if unit == "/10" else unit)}'
        "</text>",
    ]
    step = _nice_step((high - low) / 5)
    value = math.ceil(low / step) * step
    while value <= high + 1e-9:
        out.append(
            f'<text x="{LEFT - 4}" y="{y(value) + 3:.1f}" {FONT} text-anchor="end">'
            f"{fmt(round(value, 1))}</text>"
        )
        value += step
    return out


def _legend(series: MeasureSeries) -> list[str]:
    ly = HEIGHT - 8
    out = [
        f'<circle cx="{LEFT + 4}" cy="{ly - 3}" r="3" fill="{PRE_COLOUR}"/>',
        f'<text x="{LEFT + 10}" y="{ly}" {FONT}>before treatment</text>',
        f'<rect x="{LEFT + 92}" y="{ly - 6}" width="6" height="6" fill="{POST_COLOUR}"/>',
        f'<text x="{LEFT + 102}" y="{ly}" {FONT}>after treatment</text>',
    ]
    if series.phase_unrecorded:
        out += [
            f'<circle cx="{LEFT + 184}" cy="{ly - 3}" r="3" fill="#ffffff" stroke="{PRE_COLOUR}"/>',
            f'<text x="{LEFT + 190}" y="{ly}" {FONT}>phase not recorded</text>',
        ]
    if series.mcid and series.mcid.value is not None:
        out += [
            f'<rect x="{LEFT + 290}" y="{ly - 7}" width="10" height="8" fill="{BAND_COLOUR}"/>',
            f'<text x="{LEFT + 304}" y="{ly}" {FONT}>within MCID of baseline</text>',
        ]
    return out
