"""Stage compare: train every optimizer at its best lr from the same initial weights per seed."""

from gradsort.data import load_dataset, to_splits
from gradsort.files import InputFileError, read_json
from gradsort.params import load_params
from gradsort.report import write_comparison
from gradsort.stage import run_stage, set_threads
from gradsort.train import compare

DATA = "data/mnist1d.npz"


def main(say):
    params = load_params()
    threads = set_threads(params.train.threads)
    train = params.train
    best_lrs = {}
    for name in params.optimizers:
        path = f"metrics/tune/{name}.json"
        best_lrs[name] = read_json(path).get("best_lr")
        if not isinstance(best_lrs[name], float) or not best_lrs[name] > 0:
            raise InputFileError(f"{path}: no positive best_lr; rerun tune@{name}")
    train_split, val_split = to_splits(load_dataset(DATA))

    def on_run(name, seed, history, error):
        note = f" ({error})" if error else ""
        say(
            f"seed {seed} {name}: lr={best_lrs[name]:.3g} final val_loss="
            f"{history.val_loss[-1]:.4f} val_acc={history.val_acc[-1]:.3f}{note}"
        )

    histories = compare(
        params.model,
        params.optimizers,
        best_lrs,
        train_split,
        val_split,
        train.epochs,
        train.batch_size,
        train.seeds,
        on_run,
    )
    write_comparison(
        "metrics/comparison.json",
        "plots/curves.csv",
        "plots/seeds.csv",
        best_lrs,
        histories,
        train.epochs,
        threads,
    )


if __name__ == "__main__":
    run_stage("compare", main)
