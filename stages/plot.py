"""Stage plot: the figures of the comparison and of the tuning trials, and the trials table
that DVC plots."""

from pathlib import Path

from gradsort.files import InputFileError, read_json, write_csv
from gradsort.params import load_params
from gradsort.report import (
    TRIAL_FIELDS,
    plot_accuracy,
    plot_comparison,
    plot_trials,
    read_curves,
    read_trials,
)
from gradsort.stage import run_stage

LOSS_FIGURE = Path("plots/comparison_plot.png")
ACCURACY_FIGURE = Path("plots/accuracy_plot.png")
TRIALS_FIGURE = Path("plots/tuning_plot.png")
TRIALS_TABLE = Path("plots/trials.csv")
TUNE_KEYS = ("best_lr", "lr_low", "lr_high")


def main(say):
    load_params(trial_step=False)  # a bad params.yaml stops every stage, this one included
    metrics = read_json("metrics/comparison.json")
    bad = [
        name
        for name, m in metrics.items()
        if not isinstance(m, dict) or not isinstance(m.get("best_lr"), float)
    ]
    if not metrics or bad:
        raise InputFileError(
            f"metrics/comparison.json: no optimizer with a numeric best_lr {bad or ''}; "
            "rerun the compare stage"
        )
    best_lrs = {name: m["best_lr"] for name, m in metrics.items()}
    curves_path = Path("plots/curves.csv")
    if not curves_path.is_file():
        raise InputFileError(f"{curves_path}: no such file; run the compare stage")
    try:
        curves = read_curves(curves_path)
    except (ValueError, KeyError) as err:
        raise InputFileError(f"{curves_path}: not a curve table ({err}); rerun compare") from None
    missing = sorted(set(metrics) - set(curves))
    if missing:
        raise InputFileError(f"plots/curves.csv: no curves for {missing}; rerun the compare stage")
    curves = {name: curves[name] for name in metrics}
    # Only the optimizers of this comparison are read: a removed one's old files never are.
    tuned, trials = {}, {}
    for name in metrics:
        path = f"metrics/tune/{name}.json"
        tuned[name] = read_json(path)
        missing = [key for key in TUNE_KEYS if not isinstance(tuned[name].get(key), float)]
        if missing or tuned[name].get("lr_edge") not in ("low", "high", "none"):
            raise InputFileError(
                f"{path}: no number for {missing} or no lr_edge; rerun tune@{name}"
            )
        table = Path(f"plots/tune/{name}.csv")
        if not table.is_file():
            raise InputFileError(f"{table}: no such file; rerun tune@{name}")
        try:
            trials[name] = read_trials(table)
        except (ValueError, KeyError) as err:
            raise InputFileError(f"{table}: not a trial table ({err}); rerun tune@{name}") from None
    edges = {
        name: None if t.get("lr_edge", "none") == "none" else t["lr_edge"]
        for name, t in tuned.items()
    }
    first = next(iter(metrics))
    # Only the holdout protocol scores a test split; its curves are on the holdout.
    split = "holdout validation" if "test_loss" in metrics[first] else "validation"
    initial = metrics[first].get("initial_val_loss")
    plot_comparison(LOSS_FIGURE, curves, best_lrs, edges, initial, split)
    plot_accuracy(ACCURACY_FIGURE, curves, best_lrs, edges, split)
    plot_trials(TRIALS_FIGURE, trials, tuned)
    rows = [{"optimizer": name, **row} for name, table in trials.items() for row in table]
    write_csv(TRIALS_TABLE, rows, ("optimizer", *TRIAL_FIELDS))
    say(f"wrote {LOSS_FIGURE}, {ACCURACY_FIGURE}, {TRIALS_FIGURE} ({len(curves)} optimizers)")


if __name__ == "__main__":
    run_stage("plot", main)
