"""The report as an HTML page (Jinja2, autoescaped; charts inlined as SVG)."""

from __future__ import annotations

from functools import cache

from jinja2 import Environment, PackageLoader, Template, select_autoescape

from fhir_bridge.reports.charts import svg_chart
from fhir_bridge.reports.model import Report


@cache
def _template() -> Template:
    env = Environment(
        loader=PackageLoader("fhir_bridge.reports", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("report.html.j2")


def render_html(report: Report) -> str:
    """The complete HTML document."""
    return _template().render(r=report, charts=[svg_chart(s) for s in report.series])
