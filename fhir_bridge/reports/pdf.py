"""The report as PDF, drawn with fpdf2 (pure Python, installs from wheels; no system libraries).

The same :class:`~fhir_bridge.reports.model.Report` as the HTML page; each chart is drawn as
vector graphics from the shapes its SVG is written from (``charts.chart_shapes``). The built-in
Helvetica font covers Latin-1: other characters are replaced with their closest ASCII form.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from fpdf import FPDF

from fhir_bridge.reports.charts import (
    FONT_SIZE,
    HEIGHT,
    WIDTH,
    Circle,
    Line,
    Polyline,
    Rect,
    Shape,
    chart_shapes,
)
from fhir_bridge.reports.model import Report

LINE, PAD = 4.2, 1.0  # mm: line height and cell padding of tables
_ASCII = {"\u2013": "-", "\u2014": "-", "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'}


def _t(text: object) -> str:
    """Text the core font can show."""
    value = "".join(_ASCII.get(c, c) for c in str(text))
    try:
        value.encode("latin-1")
        return value
    except UnicodeEncodeError:
        folded = unicodedata.normalize("NFKD", value).encode("latin-1", "ignore").decode("latin-1")
        return folded


class _Pdf(FPDF):
    def __init__(self, report: Report) -> None:
        super().__init__(orientation="portrait", unit="mm", format="letter")
        self.report = report
        self.set_margins(15, 15, 15)
        self.set_auto_page_break(auto=True, margin=15)
        self.set_title(_t(f"{report.title}: {report.patient_name}"))
        self.set_creator(_t(report.clinic))

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("Helvetica", size=8)
        self.set_text_color(100)
        self.cell(
            0,
            5,
            _t(f"{self.report.title}, {self.report.patient_name}, page {self.page_no()}"),
            align="C",
        )
        self.set_text_color(0)

    def heading(self, text: str) -> None:
        self.ln(3)
        self.set_font("Helvetica", "B", 12)
        self.cell(0, 7, _t(text), new_x="LMARGIN", new_y="NEXT")
        self.set_draw_color(150)
        self.line(self.l_margin, self.get_y(), self.w - self.r_margin, self.get_y())
        self.ln(1.5)
        self.set_font("Helvetica", size=9)

    def grid(
        self,
        head: Sequence[str],
        rows: Sequence[Sequence[object]],
        widths: Sequence[float] | None = None,
    ) -> None:
        """A bordered table drawn cell by cell (fpdf2's table() measures every cell several
        times: 0.5 s for a 24-visit report); the heading row repeats after a page break."""
        widths = widths or [1.0] * len(head)
        widths = [w * self.epw / sum(widths) for w in widths]  # relative: fill the page width
        heading = [_t(h) for h in head]
        self._row(heading, widths, heading=True)
        for row in rows:
            if self._row([_t(c) for c in row], widths, heading=False):
                self._row(heading, widths, heading=True)  # new page: heading first
                self._row([_t(c) for c in row], widths, heading=False)
        self.ln(1.5)

    def _row(self, cells: Sequence[str], widths: Sequence[float], *, heading: bool) -> bool:
        """Draw one row; True (and nothing drawn) when it needs a new page, which is added."""
        self.set_font("Helvetica", "B" if heading else "", 9)
        lines = [
            self._wrap(text, width - 2 * PAD) for text, width in zip(cells, widths, strict=True)
        ]
        height = max(len(x) for x in lines) * LINE + 2 * PAD
        if not heading and self.get_y() + height > self.page_break_trigger:
            self.add_page()
            return True
        x, y = self.l_margin, self.get_y()
        self.set_draw_color(170)
        self.set_fill_color(238, 242, 247)
        for width, cell_lines in zip(widths, lines, strict=True):
            self.rect(x, y, width, height, style="DF" if heading else "D")
            for n, line in enumerate(cell_lines):
                self.text(x + PAD, y + PAD + LINE * (n + 1) - 1.2, line)
            x += width
        self.set_xy(self.l_margin, y + height)
        return False

    def width_of(self, text: str) -> float:
        """The text's width in mm: the core font's character widths, summed (fpdf2's own
        get_string_width runs bidi and shaping passes meant for TrueType fonts, 20x slower)."""
        widths = self.current_font.cw
        return sum(widths.get(c, 500) for c in text) * self.font_size / 1000

    def _wrap(self, text: str, width: float) -> list[str]:
        """Greedy word wrap with the current font's widths, each word measured once."""
        widths, scale = self.current_font.cw, self.font_size / 1000
        space = widths.get(" ", 278)
        lines: list[str] = []
        for paragraph in text.split("\n"):
            line: list[str] = []
            used = 0
            for word in paragraph.split(" "):
                size = sum(widths.get(c, 500) for c in word)
                extra = size + (space if line else 0)
                if line and (used + extra) * scale > width:
                    lines.append(" ".join(line))
                    line, used = [word], size
                else:
                    line.append(word)
                    used += extra
            lines.append(" ".join(line))
        return lines

    def para(self, text: str, bold_lead: str = "") -> None:
        self.set_font("Helvetica", size=9.5)
        lead = f"**{_t(bold_lead)}** " if bold_lead else ""
        body = _t(text).replace("**", "")
        self.multi_cell(0, 4.8, lead + body, markdown=True, new_x="LMARGIN", new_y="NEXT")


def render_pdf(report: Report) -> bytes:
    """The PDF document as bytes."""
    r = report
    pdf = _Pdf(r)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 9, _t(f"{r.title}: medical massage"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=9)
    pdf.set_text_color(90)
    pdf.cell(
        0,
        5,
        _t(f"{r.clinic}. Generated {r.generated_at} from the clinic's structured records."),
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.set_text_color(0)

    pdf.heading("Patient")
    pdf.grid(["Name", "Born", "MRN"], [[r.patient_name, r.patient_birth_date, r.patient_mrn]])

    pdf.heading("Prescription")
    npi = f" (NPI {r.physician_npi})" if r.physician_npi else ""
    diagnoses = "; ".join(f"{code} {text}" for code, text in r.diagnoses)
    freq = f" ({r.frequency})" if r.frequency else ""
    signed = f", signed {r.authored_on}" if r.authored_on else ""
    pdf.grid(
        ["Item", "Detail"],
        [
            ["Referring physician", r.physician + npi],
            ["Service", r.service + signed],
            ["Diagnoses (ICD-10-CM)", diagnoses],
            ["Visits used", r.visits_summary + freq],
            ["Expires", r.expires or "not stated"],
        ],
        widths=(45, 135),
    )

    pdf.heading("Visits")
    if r.visits:
        pdf.grid(
            ["Date", "Techniques", "Minutes", "CPT units"],
            [
                [v.date, v.techniques, "not recorded" if v.minutes is None else v.minutes, v.units]
                for v in r.visits
            ],
            widths=(25, 95, 25, 35),
        )
    else:
        pdf.para("No visits documented yet.")

    pdf.heading("Outcomes")
    _outcomes(pdf, r)

    pdf.heading("Goals")
    if r.goals:
        pdf.grid(
            ["Goal", "Target", "Latest", "Status", "Due"],
            [[g.description, g.target, g.latest, g.status, g.due] for g in r.goals],
            widths=(80, 25, 25, 25, 25),
        )
    else:
        pdf.para("No goals recorded.")

    pdf.heading("Assessment and plan")
    pdf.para(r.assessment or "not recorded", "Assessment:")
    pdf.para(r.plan or "not recorded", "Plan:")

    pdf.ln(10)
    pdf.para(f"Therapist: {r.therapist or '________________'}")
    pdf.ln(6)
    pdf.para("Signature: ______________________________    Date: ______________")
    return bytes(pdf.output())


def _outcomes(pdf: _Pdf, r: Report) -> None:
    measured = [s for s in r.series if s.course]
    if not r.series:
        pdf.para("No measurements recorded.")
        return
    if measured:
        rows = []
        for s in measured:
            pct = f" ({s.percent_change:+.0f}%)" if s.percent_change is not None else ""
            rows.append(
                [
                    s.title,
                    f"{s.show(s.course[0].value)} ({s.course[0].date})",
                    f"{s.show(s.course[-1].value)} ({s.course[-1].date})",
                    "-" if len(s.course) < 2 else (s.show_change(s.change) or "0") + pct,
                    s.direction,
                    s.mcid_status,
                ]
            )
        pdf.grid(
            ["Measure", "Baseline", "Latest", "Change", "Result", "MCID"],
            rows,
            widths=(44, 28, 28, 24, 26, 30),
        )
    if any(s.phase_unrecorded for s in r.series):
        pdf.para(
            "Some values came without a recorded phase (before or after treatment); they are"
            ' shown by time and labelled "phase not recorded".'
        )
    effects = [
        [s.title, v.date, s.show(v.pre), s.show(v.post), s.show_change(v.change)]
        for s in r.series
        for v in s.visits
    ]
    effects += [
        [s.title, p.date, f"{s.show(p.value)} (phase not recorded)", "", ""]
        for s in r.series
        for p in s.points
        if p.phase == "unrecorded"
    ]
    if effects:
        pdf.set_font("Helvetica", "B", 10)
        pdf.cell(0, 6, "Visit by visit (immediate effect)", new_x="LMARGIN", new_y="NEXT")
        pdf.grid(
            ["Measure", "Date", "Before", "After", "Change"], effects, widths=(62, 25, 33, 30, 30)
        )
    width = 150.0
    height = width * HEIGHT / WIDTH
    for s in r.series:
        if pdf.get_y() + height > pdf.page_break_trigger:
            pdf.add_page()
        y = pdf.get_y()
        draw_chart(pdf, chart_shapes(s), pdf.l_margin, y, width / WIDTH)
        pdf.set_xy(pdf.l_margin, y + height + 2)


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def draw_chart(pdf: _Pdf, shapes: Sequence[Shape], x0: float, y0: float, k: float) -> None:
    """The chart's shapes as PDF vector graphics; ``k`` mm per chart unit."""
    for shape in shapes:
        if isinstance(shape, Line):
            pdf.set_draw_color(*_rgb(shape.stroke))
            pdf.set_line_width(shape.width * k)
            pdf.set_dash_pattern(5 * k, 3 * k) if shape.dashed else pdf.set_dash_pattern()
            pdf.line(x0 + shape.x1 * k, y0 + shape.y1 * k, x0 + shape.x2 * k, y0 + shape.y2 * k)
            pdf.set_dash_pattern()
        elif isinstance(shape, Rect):
            pdf.set_fill_color(*_rgb(shape.fill))
            pdf.rect(x0 + shape.x * k, y0 + shape.y * k, shape.w * k, shape.h * k, style="F")
        elif isinstance(shape, Circle):
            pdf.set_fill_color(*_rgb(shape.fill))
            pdf.set_draw_color(*_rgb(shape.stroke))
            pdf.set_line_width(0.8 * k)
            pdf.circle(x0 + shape.cx * k, y0 + shape.cy * k, shape.r * k, style="DF")
        elif isinstance(shape, Polyline):
            pdf.set_draw_color(*_rgb(shape.stroke))
            pdf.set_line_width(shape.width * k)
            pdf.polyline([(x0 + px * k, y0 + py * k) for px, py in shape.points], style="D")
        else:
            pdf.set_font("Helvetica", "B" if shape.bold else "", FONT_SIZE * k * 72 / 25.4)
            pdf.set_text_color(*_rgb(shape.fill))
            text = _t(shape.text)
            width = pdf.width_of(text)
            shift = {"start": 0.0, "middle": width / 2, "end": width}[shape.anchor]
            pdf.text(x0 + shape.x * k - shift, y0 + shape.y * k, text)
    pdf.set_text_color(0)
    pdf.set_draw_color(0)
    pdf.set_line_width(0.2)
