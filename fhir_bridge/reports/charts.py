"""Outcome charts: one measure over the visits, as vector shapes, SVG for any page.

Pure. :func:`chart_shapes` lays the chart out once as a short list of primitives (lines,
rectangles, circles, a polyline, text) in a 520 x 220 user-unit box; :func:`svg_chart` writes
them as an SVG document (inlined in the HTML report, reusable by any page), and the PDF renderer
draws the same shapes with fpdf2's vector primitives (parsing SVG back would cost ~10x more).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from html import escape

from fhir_bridge.mapping.outcomes import POST, PRE, MeasureSeries, fmt

WIDTH, HEIGHT = 520, 220
LEFT, RIGHT, TOP, BOTTOM, PAD = 48, 16, 36, 38, 24
PRE_COLOUR, POST_COLOUR, GOAL_COLOUR, BAND_COLOUR = "#1f4e79", "#c55a11", "#2e7d32", "#e3eef9"
AXIS_COLOUR, TEXT_COLOUR, WHITE = "#555555", "#222222", "#ffffff"
FONT_SIZE = 9


@dataclass(frozen=True)
class Line:
    x1: float
    y1: float
    x2: float
    y2: float
    stroke: str
    width: float = 1.0
    dashed: bool = False


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    w: float
    h: float
    fill: str


@dataclass(frozen=True)
class Circle:
    cx: float
    cy: float
    r: float
    fill: str
    stroke: str


@dataclass(frozen=True)
class Polyline:
    points: tuple[tuple[float, float], ...]
    stroke: str
    width: float


@dataclass(frozen=True)
class Text:
    x: float
    y: float  # baseline
    text: str
    anchor: str = "start"  # start, middle, end
    fill: str = TEXT_COLOUR
    bold: bool = False


Shape = Line | Rect | Circle | Polyline | Text


def svg_chart(series: MeasureSeries) -> str:
    """One measure over the episode as a standalone SVG document (a string).

    Input: one :class:`~fhir_bridge.mapping.outcomes.MeasureSeries` from the outcome engine.
    Drawn: the course (pre-treatment values, and values whose phase was not recorded as hollow
    markers, joined by a line), each visit's post-treatment value (orange square, joined to its
    pre value: the immediate effect), each goal target as a dashed green line, and the MCID
    band (light blue): values within one MCID of the baseline, which the course must leave in
    the better direction to count as a clinically important change. The y axis spans the
    measure's range when it is short (0-10, 0-4), else the values with round ticks, labelled
    with the human unit. Output: ``<svg ...>...</svg>``, 520 x 220 user units, no scripts, no
    external references, escaped text.
    """
    body = "".join(_svg(shape) for shape in chart_shapes(series))
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(series.title)}" '
        f'font-family="Helvetica, Arial, sans-serif" font-size="{FONT_SIZE}">{body}</svg>'
    )


def chart_shapes(series: MeasureSeries) -> list[Shape]:
    """The chart of one series as shapes, in drawing order, in the 520 x 220 box."""
    dates = sorted({p.date for p in series.points})
    low, high = _y_range(series)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    inner = plot_w - 2 * PAD

    def x(date: str) -> float:
        if len(dates) == 1:
            return LEFT + plot_w / 2
        return LEFT + PAD + inner * dates.index(date) / (len(dates) - 1)

    def y(value: float) -> float:
        return TOP + plot_h * (1 - (value - low) / (high - low))

    shapes: list[Shape] = [Text(LEFT, 11, series.title, bold=True)]
    base = series.baseline
    if base is not None and series.mcid and series.mcid.value is not None:
        m = float(series.mcid.value)
        top_v, bottom_v = min(high, base.value + m), max(low, base.value - m)
        shapes.append(Rect(LEFT, y(top_v), plot_w, y(bottom_v) - y(top_v), BAND_COLOUR))
    shapes += _axes(low, high, y, series.unit)
    shapes += [Text(x(d), HEIGHT - BOTTOM + 14, d[5:], anchor="middle") for d in dates]
    for goal in series.goals:
        gy = y(min(max(goal.target, low), high))
        shapes.append(Line(LEFT, gy, WIDTH - RIGHT, gy, GOAL_COLOUR, 1.2, dashed=True))
        label = f"goal {series.show(goal.target)}"
        shapes.append(Text(WIDTH - RIGHT - 2, gy - 3, label, anchor="end", fill=GOAL_COLOUR))
    for v in series.visits:
        if v.pre is not None and v.post is not None:
            vx = x(v.date)
            shapes.append(Line(vx, y(v.pre), vx + 8, y(v.post), POST_COLOUR))
    course = [(x(p.date), y(p.value), p) for p in series.course]
    if len(course) > 1:
        shapes.append(Polyline(tuple((cx, cy) for cx, cy, _ in course), PRE_COLOUR, 1.6))
    for cx, cy, p in course:
        fill = PRE_COLOUR if p.phase == PRE else WHITE
        shapes.append(Circle(cx, cy, 3.2, fill, PRE_COLOUR))
        shapes.append(Text(cx - 5, cy - 6, fmt(p.value), anchor="end"))
    for p in series.points:
        if p.phase == POST:
            shapes.append(Rect(x(p.date) + 5, y(p.value) - 3, 6, 6, POST_COLOUR))
    shapes += _legend(series)
    return shapes


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


def _axes(low: float, high: float, y: Callable[[float], float], unit: str) -> list[Shape]:
    bottom = HEIGHT - BOTTOM
    out: list[Shape] = [
        Line(LEFT, TOP, LEFT, bottom, AXIS_COLOUR),
        Line(LEFT, bottom, WIDTH - RIGHT, bottom, AXIS_COLOUR),
        Text(6, TOP - 10, "score (0-10)" if unit == "/10" else unit),
    ]
    step = _nice_step((high - low) / 5)
    value = math.ceil(low / step) * step
    while value <= high + 1e-9:
        out.append(Text(LEFT - 4, y(value) + 3, fmt(round(value, 1)), anchor="end"))
        value += step
    return out


def _legend(series: MeasureSeries) -> list[Shape]:
    ly = HEIGHT - 8
    out: list[Shape] = [
        Circle(LEFT + 4, ly - 3, 3, PRE_COLOUR, PRE_COLOUR),
        Text(LEFT + 10, ly, "before treatment"),
        Rect(LEFT + 92, ly - 6, 6, 6, POST_COLOUR),
        Text(LEFT + 102, ly, "after treatment"),
    ]
    if series.phase_unrecorded:
        out += [
            Circle(LEFT + 184, ly - 3, 3, WHITE, PRE_COLOUR),
            Text(LEFT + 190, ly, "phase not recorded"),
        ]
    if series.mcid and series.mcid.value is not None:
        out += [
            Rect(LEFT + 290, ly - 7, 10, 8, BAND_COLOUR),
            Text(LEFT + 304, ly, "within MCID of baseline"),
        ]
    return out


def _svg(shape: Shape) -> str:
    if isinstance(shape, Line):
        dash = ' stroke-dasharray="5 3"' if shape.dashed else ""
        return (
            f'<line x1="{shape.x1:.1f}" y1="{shape.y1:.1f}" x2="{shape.x2:.1f}" '
            f'y2="{shape.y2:.1f}" stroke="{shape.stroke}" stroke-width="{shape.width}"{dash}/>'
        )
    if isinstance(shape, Rect):
        return (
            f'<rect x="{shape.x:.1f}" y="{shape.y:.1f}" width="{shape.w:.1f}" '
            f'height="{shape.h:.1f}" fill="{shape.fill}"/>'
        )
    if isinstance(shape, Circle):
        return (
            f'<circle cx="{shape.cx:.1f}" cy="{shape.cy:.1f}" r="{shape.r}" '
            f'fill="{shape.fill}" stroke="{shape.stroke}"/>'
        )
    if isinstance(shape, Polyline):
        points = " ".join(f"{px:.1f},{py:.1f}" for px, py in shape.points)
        return (
            f'<polyline points="{points}" fill="none" stroke="{shape.stroke}" '
            f'stroke-width="{shape.width}"/>'
        )
    weight = ' font-weight="bold"' if shape.bold else ""
    return (
        f'<text x="{shape.x:.1f}" y="{shape.y:.1f}" text-anchor="{shape.anchor}" '
        f'fill="{shape.fill}"{weight}>{escape(shape.text)}</text>'
    )
