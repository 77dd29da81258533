"""What the bounded JSON parser costs: jsonio.loads vs the plain json.loads it wraps.

``.venv/bin/python -m bench.json_parse`` parses a transaction Bundle made of the sample referral
repeated (about 0.1 MB and 4 MB) and prints the medians. jsonio adds a nesting count, a scan for
19-digit runs and one for surrogate escapes before/after ``json.loads`` (fhir/jsonio.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from decimal import Decimal
from pathlib import Path

from fhir_bridge.fhir import jsonio

SAMPLE = Path(__file__).resolve().parents[1] / "sample_bundles/referrals/whiplash-transaction.json"


def plain(data: bytes) -> object:
    """The parse before the bounds: exact decimals, duplicate keys refused."""
    return json.loads(data, parse_float=Decimal, object_pairs_hook=jsonio._unique_keys)


def median_ms(fn, data: bytes, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn(data)
        runs.append(time.perf_counter() - started)
    return statistics.median(runs) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    entries = json.loads(SAMPLE.read_text())["entry"]
    print("| body | json.loads | jsonio.loads | ratio |")
    print("|---|---|---|---|")
    for copies in (10, 400):
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries * copies}
        data = json.dumps(bundle).encode()
        base = median_ms(plain, data, args.repeats)
        bounded = median_ms(jsonio.loads, data, args.repeats)
        size = f"{len(data) / 1e6:.2f} MB"
        print(f"| {size} | {base:.2f} ms | {bounded:.2f} ms | {bounded / base:.2f}x |")


if __name__ == "__main__":
    main()
