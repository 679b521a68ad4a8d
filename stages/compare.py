"""Stage compare: train every optimizer at its best lr from the same initial weights per seed."""

import math

from gradsort.data import load_dataset, protocol_splits
from gradsort.files import InputFileError, read_json
from gradsort.params import load_params
from gradsort.report import write_comparison, write_summary
from gradsort.stage import run_stage, select_device, set_threads
from gradsort.train import compare

DATA = "data/mnist1d.npz"


def main(say):
    params = load_params()
    threads = set_threads(params.train.threads)
    device = select_device(params.train.device)
    train, data = params.train, params.data
    tuned = {}
    for name in params.optimizers:
        path = f"metrics/tune/{name}.json"
        tuned[name] = read_json(path)
        best_lr = tuned[name].get("best_lr")
        if not isinstance(best_lr, float) or not 0 < best_lr < math.inf:
            raise InputFileError(f"{path}: no positive finite best_lr; rerun tune@{name}")
        if tuned[name].get("lr_edge", "none") not in ("low", "high", "none"):
            raise InputFileError(f"{path}: lr_edge is not low, high or none; rerun tune@{name}")
    best_lrs = {name: t["best_lr"] for name, t in tuned.items()}
    splits = protocol_splits(
        load_dataset(DATA), data.protocol, data.holdout_fraction, data.seed, device
    )

    def on_run(name, seed, history, error):
        note = f" ({error})" if error else ""
        test = "" if history.test_loss is None else f" test_loss={history.test_loss:.4f}"
        say(
            f"seed {seed} {name}: lr={best_lrs[name]:.3g} final val_loss="
            f"{history.val_loss[-1]:.4f} val_acc={history.val_acc[-1]:.3f}{test}{note}"
        )

    histories = compare(
        params.model,
        params.optimizers,
        best_lrs,
        splits.train,
        splits.val,
        train.epochs,
        train.batch_size,
        train.seeds,
        on_run,
        test_split=splits.test,
    )
    metrics = write_comparison(
        "metrics/comparison.json",
        "plots/curves.csv",
        "plots/seeds.csv",
        best_lrs,
        histories,
        train.epochs,
        threads,
        finals_path="metrics/comparison_seeds.csv",
    )
    specs = {
        name: (spec.base, spec.transform, bool(spec.kwargs))
        for name, spec in params.optimizers.items()
    }
    setup = {
        "protocol": data.protocol,
        "holdout_fraction": data.holdout_fraction,
        "seeds": train.seeds,
        "epochs": train.epochs,
        "trials": params.tune.trials,
        "tune_epochs": params.tune.epochs,
    }
    write_summary("plots/summary.md", metrics, specs, tuned, setup)
    say(f"on {device.type}; wrote metrics/comparison.json and plots/summary.md")


if __name__ == "__main__":
    run_stage("compare", main)
