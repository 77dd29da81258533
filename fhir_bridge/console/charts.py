"""Inline SVG line charts of measure series: pure geometry, drawn by ``_chart.html``.

No script and no style attribute (the console's Content-Security-Policy allows neither):
colours and strokes come from classes in ``console.css``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fhir_bridge.console.outcome_adapter import MeasureSeries

WIDTH, HEIGHT = 420, 200
LEFT, RIGHT, TOP, BOTTOM = 40, 12, 12, 30
INSET = 22


@dataclass(frozen=True)
class Mark:
    """A point on the chart with its accessible title."""

    x: float
    y: float
    phase: str
    title: str


@dataclass(frozen=True)
class Chart:
    """Everything the template draws for one series."""

    series: MeasureSeries
    width: int
    height: int
    left: int
    right: int
    pre_path: str
    post_path: str
    marks: list[Mark]
    goal_y: float | None
    y_ticks: list[tuple[float, str]]
    x_labels: list[tuple[float, str]]
    summary: str


def _fmt(value: float) -> str:
    return f"{value:g}"


def _nice_step(span: float) -> float:
    """A round tick step (1, 2, 2.5 or 5 x 10^k) giving about four intervals over ``span``."""
    raw = span / 4
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)


def chart(series: MeasureSeries) -> Chart:
    """Scale a series into the chart box: visits spread evenly along x, values on y."""
    values = [p.value for p in series.points] + ([series.goal] if series.goal is not None else [])
    low, high = min(values), max(values)
    if high == low:
        low, high = low - 1, high + 1
    step = _nice_step(high - low)
    low, high = math.floor(low / step) * step, math.ceil(high / step) * step
    if high - low < step * 2:
        low, high = low - step, high + step
    days = sorted({p.at[:10] for p in series.points})
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x_of(day: str) -> float:
        if len(days) == 1:
            return LEFT + plot_w / 2
        # inset so the first and last date labels (centred on their point) stay inside
        return round(LEFT + INSET + (plot_w - 2 * INSET) * days.index(day) / (len(days) - 1), 1)

    def y_of(value: float) -> float:
        return round(TOP + plot_h * (high - value) / (high - low), 1)

    marks = [
        Mark(
            x_of(p.at[:10]),
            y_of(p.value),
            p.phase,
            f"{p.at[:10]} {p.phase_label}: {_fmt(p.value)} {series.unit}",
        )
        for p in series.points
    ]

    def path(phase: str) -> str:
        pts = [m for m in marks if m.phase == phase]
        return " ".join(f"{'M' if i == 0 else 'L'}{m.x},{m.y}" for i, m in enumerate(pts))

    ticks = round((high - low) / step)
    y_ticks = [(y_of(low + step * i), _fmt(round(low + step * i, 6))) for i in range(ticks + 1)]
    shown = days if len(days) <= 6 else days[:: max(1, len(days) // 6)]
    pre = [p.value for p in series.points if p.phase == "pre"]
    summary = f"{series.label}: {len(series.points)} values over {len(days)} visit day(s)"
    if len(pre) >= 2:
        summary += f"; pre-treatment {_fmt(pre[0])} -> {_fmt(pre[-1])} {series.unit}"
    if series.goal is not None:
        summary += f"; goal {_fmt(series.goal)} {series.unit}"
    return Chart(
        series=series,
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        right=RIGHT,
        pre_path=path("pre"),
        post_path=path("post"),
        marks=marks,
        goal_y=y_of(series.goal) if series.goal is not None else None,
        y_ticks=y_ticks,
        x_labels=[(x_of(d), d[5:]) for d in shown],
        summary=summary,
    )
