"""The report as PDF, drawn with fpdf2 (pure Python, installs from wheels; no system libraries).

The same :class:`~fhir_bridge.reports.model.Report` as the HTML page, laid out with fpdf2's
tables; each chart is the SVG of :func:`~fhir_bridge.reports.charts.svg_chart`, drawn as vector
paths. The built-in Helvetica font covers Latin-1: other characters are replaced with their
closest ASCII form.
"""

from __future__ import annotations

import io
import unicodedata
from collections.abc import Sequence

from fpdf import FPDF
from fpdf.fonts import FontFace

from fhir_bridge.reports.charts import HEIGHT, WIDTH, svg_chart
from fhir_bridge.reports.model import Report

HEADING = FontFace(emphasis="BOLD", fill_color=(238, 242, 247))
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

    def grid(self, head: Sequence[str], rows: Sequence[Sequence[object]], widths=None) -> None:
        self.set_font("Helvetica", size=9)
        with self.table(
            col_widths=widths,
            headings_style=HEADING,
            line_height=4.6,
            text_align="LEFT",
            padding=1,
        ) as table:
            table.row([_t(h) for h in head])
            for row in rows:
                table.row([_t(c) for c in row])
        self.ln(1)

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
                    f"{s.show(s.baseline.value)} ({s.baseline.date})",  # type: ignore[union-attr]
                    f"{s.show(s.latest.value)} ({s.latest.date})",  # type: ignore[union-attr]
                    "-" if len(s.course) < 2 else (s.show_change(s.change) or "0") + pct,
                    s.direction,
                    s.mcid_status,
                ]
            )
        pdf.grid(
            ["Measure", "Baseline", "Latest", "Change", "Result", "MCID"],
            rows,
            widths=(48, 28, 28, 26, 18, 32),
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
        if pdf.get_y() + height > pdf.h - pdf.b_margin:
            pdf.add_page()
        pdf.image(io.BytesIO(svg_chart(s).encode()), x=pdf.l_margin, w=width, h=height)
        pdf.ln(2)
