"""Paired differences between two optimizers of a comparison, seed by seed.

Usage: python scripts/paired.py A B [--table metrics/comparison_seeds.csv]

Prints, for each per-seed value of the table (``compare``'s ``metrics/comparison_seeds.csv``,
or a copy such as ``docs/extended/comparison_seeds.csv``), the mean of A - B over the
seeds both have, its 95% t interval and the paired t-test's p-value
(``gradsort.stats.paired_difference``).
"""

import argparse
import csv
import math
from pathlib import Path

from gradsort.files import InputFileError
from gradsort.report import FINAL_FIELDS
from gradsort.stage import run_stage
from gradsort.stats import paired_difference


def per_seed(rows: list[dict], name: str) -> dict[int, dict]:
    return {int(row["seed"]): row for row in rows if row["optimizer"] == name}


def main(say, args):
    if not args.table.is_file():
        raise InputFileError(f"{args.table}: no such file; run the compare stage")
    with open(args.table, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or set(FINAL_FIELDS) - set(rows[0]):
        raise InputFileError(f"{args.table}: not a per-seed table of compare")
    a, b = per_seed(rows, args.a), per_seed(rows, args.b)
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise InputFileError(f"{args.table}: no seed holds both {args.a} and {args.b}")
    print(f"{args.a} - {args.b}, paired over seeds {seeds}")
    for key in FINAL_FIELDS[4:]:
        if "" in (a[s][key] for s in seeds) or "" in (b[s][key] for s in seeds):
            continue
        result = paired_difference(
            [float(a[s][key]) for s in seeds], [float(b[s][key]) for s in seeds]
        )
        ci = (
            f"[{result['ci_low']:+.4f}, {result['ci_high']:+.4f}]"
            if math.isfinite(result["ci_low"])
            else "[no interval]"
        )
        print(f"  {key:<15} {result['diff']:+.4f} {ci} p={result['p']:.2g}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--table", type=Path, default=Path("metrics/comparison_seeds.csv"))
    args = parser.parse_args()
    run_stage("paired", lambda say: main(say, args))
