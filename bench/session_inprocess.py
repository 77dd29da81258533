"""In-process cost of one session: our load + map + validate vs bare fhir.resources validation.

For each sample record (and the contract example), single-threaded, in this process:

* ``load``     ``load_session(payload, vocabulary=...)`` (marshmallow schema + relational checks)
* ``map``      ``map_session(record, tables, fresh_context(record, clinic))``
* ``validate`` ``fhir_bridge.fhir.validation.validate_resource`` on every produced resource
* ``ours``     the three together, as ``services.sessions`` runs them
* ``bare``     ``get_fhir_model_class(type).model_validate(resource)`` (fhir.resources R4B)
  on the same produced resources

Each figure is timeit-style: the median over ``repeats`` runs of ``number`` iterations (the
garbage collector off during a run, as timeit does), in microseconds per session.
"""

from __future__ import annotations

import statistics
import timeit
from collections.abc import Callable
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from bench.session_records import sample_records, vocabulary
from fhir_bridge.fhir.validation import validate_resource
from fhir_bridge.mapping.context import ClinicIdentity, fresh_context
from fhir_bridge.mapping.session import map_session
from fhir_bridge.mapping.tables import MappingTables, load_tables
from fhir_bridge.records.schemas import load_session, preload_icd10cm
from fhir_bridge.settings import Settings

GOAL_RATIO = 1.3
STAGES = ("load", "map", "validate", "ours", "bare")


def _median_us(fn: Callable[[], object], number: int, repeats: int) -> tuple[float, list[float]]:
    runs = timeit.Timer(fn).repeat(repeat=repeats, number=number)
    per_call = [r / number * 1e6 for r in runs]
    return statistics.median(per_call), per_call


def _stages(
    payload: dict[str, Any], tables: MappingTables, clinic: ClinicIdentity
) -> dict[str, Callable[[], object]]:
    """The timed callables of one record (inputs of later stages prepared once)."""
    vocab = vocabulary()
    record = load_session(payload, vocabulary=vocab)
    resources = map_session(record, tables, fresh_context(record, clinic)).resources
    classes = [(get_fhir_model_class(r["resourceType"]), r) for r in resources]

    def ours() -> None:
        rec = load_session(payload, vocabulary=vocab)
        for resource in map_session(rec, tables, fresh_context(rec, clinic)).resources:
            validate_resource(resource)

    return {
        "load": lambda: load_session(payload, vocabulary=vocab),
        "map": lambda: map_session(record, tables, fresh_context(record, clinic)),
        "validate": lambda: [validate_resource(r) for r in resources],
        "ours": ours,
        "bare": lambda: [cls.model_validate(r) for cls, r in classes],
    }


def run(number: int = 20, repeats: int = 7) -> dict[str, Any]:
    """Measure every sample record; returns per-record figures, their mean and the verdict."""
    tables = load_tables()
    settings = Settings()
    clinic = ClinicIdentity(settings.clinic_system_base, settings.payer_id_system)
    preload_icd10cm()
    rows: dict[str, Any] = {}
    for name, payload in sample_records().items():
        record = load_session(payload, vocabulary=vocabulary())
        mapped = map_session(record, tables, fresh_context(record, clinic))
        problems = [
            i
            for r in mapped.resources
            for i in validate_resource(r)
            if i.severity in ("error", "fatal")
        ]
        if problems:
            raise RuntimeError(f"{name}: mapped resources do not validate: {problems[0]}")
        row: dict[str, Any] = {"resources": len(mapped.resources), "us": {}, "runs_us": {}}
        for stage, fn in _stages(payload, tables, clinic).items():
            fn()  # warm caches before timing
            median, runs = _median_us(fn, number, repeats)
            row["us"][stage] = round(median, 1)
            row["runs_us"][stage] = [round(r, 1) for r in runs]
        row["ratio"] = round(row["us"]["ours"] / row["us"]["bare"], 3)
        row["validate_ratio"] = round(row["us"]["validate"] / row["us"]["bare"], 3)
        rows[name] = row
        print(
            f"  {name:28s} {row['resources']:3d} res  ours {row['us']['ours']:8.0f} us"
            f"  bare {row['us']['bare']:8.0f} us  ratio {row['ratio']:.2f}x",
            flush=True,
        )
    mean = {s: round(statistics.fmean(r["us"][s] for r in rows.values()), 1) for s in STAGES}
    ratio = mean["ours"] / mean["bare"]
    worst = max(r["ratio"] for r in rows.values())
    return {
        "number": number,
        "repeats": repeats,
        "records": rows,
        "mean_us": mean,
        "mean_ratio": round(ratio, 3),
        "worst_ratio": worst,
        "goal_ratio": GOAL_RATIO,
        "verdict": "PASS" if worst <= GOAL_RATIO else "FAIL",
    }


def print_table(result: dict[str, Any]) -> None:
    """Per record: the stage medians in us per session and the ratio ours/bare."""
    print(
        f"\nIn-process, single thread, us per session (median of {result['repeats']} runs"
        f" x {result['number']} iterations)"
    )
    header = (
        f"{'record':28s} {'res':>3s} {'load':>8s} {'map':>8s} {'validate':>9s}"
        f" {'ours':>8s} {'bare':>8s} {'ours/bare':>9s} {'val/bare':>8s}"
    )
    print(header)
    print("-" * len(header))
    rows = list(result["records"].items())
    for name, row in rows:
        us = row["us"]
        print(
            f"{name:28s} {row['resources']:3d} {us['load']:8.0f} {us['map']:8.0f}"
            f" {us['validate']:9.0f} {us['ours']:8.0f} {us['bare']:8.0f}"
            f" {row['ratio']:8.2f}x {row['validate_ratio']:7.2f}x"
        )
    m = result["mean_us"]
    print(
        f"{'mean':28s} {'':3s} {m['load']:8.0f} {m['map']:8.0f} {m['validate']:9.0f}"
        f" {m['ours']:8.0f} {m['bare']:8.0f} {result['mean_ratio']:8.2f}x"
        f" {m['validate'] / m['bare']:7.2f}x"
    )
    print(
        f"Goal: load+map+validate <= {result['goal_ratio']:g}x bare R4B validation per record:"
        f" worst {result['worst_ratio']:.2f}x, mean {result['mean_ratio']:.2f}x"
        f" -> {result['verdict']}"
    )
