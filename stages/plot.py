"""Stage plot: the comparison figure from the curves that compare wrote."""

from pathlib import Path

from gradsort.files import InputFileError, read_json
from gradsort.params import load_params
from gradsort.report import plot_comparison, read_curves
from gradsort.stage import run_stage

OUT = Path("plots/comparison_plot.png")


def main(say):
    load_params(trial_step=False)  # a bad params.yaml stops every stage, this one included
    metrics = read_json("metrics/comparison.json")
    best_lrs = {name: m["best_lr"] for name, m in metrics.items()}
    curves_path = Path("plots/curves.csv")
    if not curves_path.is_file():
        raise InputFileError(f"{curves_path}: no such file; run the compare stage")
    curves = read_curves(curves_path)
    missing = sorted(set(metrics) - set(curves))
    if missing:
        raise InputFileError(f"plots/curves.csv: no curves for {missing}; rerun the compare stage")
    curves = {name: curves[name] for name in metrics}
    plot_comparison(OUT, curves, best_lrs)
    say(f"wrote {OUT} ({len(curves)} optimizers)")


if __name__ == "__main__":
    run_stage("plot", main)
