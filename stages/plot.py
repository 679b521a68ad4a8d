"""Stage plot: the comparison figure from the curves that compare wrote."""

import json
from pathlib import Path

from gradsort.data import DatasetError
from gradsort.params import load_params
from gradsort.report import plot_comparison, read_curves
from gradsort.stage import run_stage

OUT = Path("plots/comparison_plot.png")


def main(say):
    load_params()  # a bad params.yaml stops every stage, this one included
    with open("metrics/comparison.json") as f:
        metrics = json.load(f)
    best_lrs = {name: m["best_lr"] for name, m in metrics.items()}
    curves = read_curves(Path("plots/curves.csv"))
    missing = sorted(set(metrics) - set(curves))
    if missing:
        raise DatasetError(f"plots/curves.csv: no curves for {missing}; rerun the compare stage")
    curves = {name: curves[name] for name in metrics}
    plot_comparison(OUT, curves, best_lrs)
    say(f"wrote {OUT} ({len(curves)} optimizers)")


if __name__ == "__main__":
    run_stage("plot", main)
