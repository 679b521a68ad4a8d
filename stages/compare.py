"""Stage compare: train every optimizer at its best lr from the same initial weights per seed."""

import json

from gradsort.data import load_dataset, to_splits
from gradsort.model import initial_state
from gradsort.params import load_params
from gradsort.report import write_comparison
from gradsort.stage import run_stage
from gradsort.train import DivergedError, train_from

DATA = "data/mnist1d.npz"


def main(say):
    params = load_params()
    model, train = params.model, params.train
    best_lrs = {}
    for name in params.optimizers:
        with open(f"metrics/tune/{name}.json") as f:
            best_lrs[name] = json.load(f)["best_lr"]
    train_split, val_split = to_splits(load_dataset(DATA))

    histories = {name: [] for name in params.optimizers}
    for seed in range(train.seeds):
        state = initial_state(seed, train_split.x.shape[1], model.hidden_size, model.hidden_layers)
        for name, spec in params.optimizers.items():
            try:
                history = train_from(
                    state, model.hidden_size, model.hidden_layers, spec.base, spec.transform,
                    spec.kwargs, best_lrs[name], train_split, val_split, train.epochs,
                    train.batch_size, seed,
                )
            except DivergedError as err:
                history = err.history
                say(f"seed {seed} {name}: {err}")
            say(f"seed {seed} {name}: lr={best_lrs[name]:.3g} "
                f"final val_loss={history.val_loss[-1]:.4f} val_acc={history.val_acc[-1]:.3f}")
            histories[name].append(history)

    write_comparison("metrics/comparison.json", "plots/curves", "plots/seeds.csv", best_lrs,
                     histories, train.epochs)


if __name__ == "__main__":
    run_stage("compare", main)
