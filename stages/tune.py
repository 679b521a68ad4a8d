"""Stage tune@<name>: the Optuna study of one optimizer's learning rate.

Usage: python stages/tune.py NAME, NAME an entry of params.yaml's ``optimizers``.
"""

import os
import sys
from pathlib import Path

import optuna

from gradsort.data import load_dataset, protocol_splits
from gradsort.files import write_csv, write_json
from gradsort.model import initial_state
from gradsort.params import ParamsError, load_params
from gradsort.stage import run_stage, select_device, set_threads
from gradsort.train import train_many
from gradsort.tune import (
    describe,
    edge_warning,
    run_study,
    sqlite_url,
    study_summary,
    trial_rows,
)

DATA = "data/mnist1d.npz"
TRIAL_FIELDS = ("trial", "lr", "value", "state", "fail_reason")
TUNE_SEED = 0  # every trial starts from the seed-0 initial weights and batch order


def main(say, name):
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the stage prints its own lines
    params = load_params()
    threads = set_threads(params.train.threads)
    if name not in params.optimizers:
        raise ParamsError(f"optimizers.{name}: no such optimizer; have {sorted(params.optimizers)}")
    spec, tune, model = params.optimizers[name], params.tune, params.model
    device = select_device(params.train.device)
    data = params.data
    # Tuning never sees a test split: under the holdout protocol it validates on the holdout.
    splits = protocol_splits(
        load_dataset(DATA), data.protocol, data.holdout_fraction, data.seed, device
    )
    train_split, val_split = splits.train, splits.val
    state = initial_state(TUNE_SEED, train_split.x.shape[1], model.hidden_size, model.hidden_layers)

    def train_wave(lrs):
        k = len(lrs)
        return train_many(
            [state] * k,
            model,
            spec,
            lrs,
            [TUNE_SEED] * k,
            train_split,
            val_split,
            tune.epochs,
            params.train.batch_size,
        )

    # The study is built in a fixed side file, so a killed run leaves nothing a rerun reads:
    # the rerun starts a fresh study and ends with exactly tune.trials trials.
    # Limitation: the trials a killed run finished are discarded, not resumed.
    storage = Path(f"data/studies/{name}.db")
    partial = storage.with_name(storage.name + ".partial")
    storage.parent.mkdir(parents=True, exist_ok=True)
    partial.unlink(missing_ok=True)
    try:
        study = run_study(
            train_wave,
            tune.trials,
            tune.lr_low,
            tune.lr_high,
            tune.sampler_seed,
            tune.objective,
            tune.wave_size,
            storage=sqlite_url(partial),
            study_name=name,
            on_trial=lambda t: say(describe(t)),
        )
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, storage)
    summary = {
        **study_summary(study, tune.lr_low, tune.lr_high),
        "lr_low": tune.lr_low,
        "lr_high": tune.lr_high,
        "torch_threads": threads,
        "device": device.type,
    }
    write_csv(f"plots/tune/{name}.csv", trial_rows(study), TRIAL_FIELDS)
    write_json(f"metrics/tune/{name}.json", summary)
    say(
        f"best lr {summary['best_lr']:.3g} (value {summary['best_value']:.4f}), "
        f"{summary['complete']} complete, {summary['failed']} failed, on {device.type}"
    )
    if summary["lr_at_edge"]:
        say(f"warning: {edge_warning(summary['best_lr'], tune.lr_low, tune.lr_high)}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python stages/tune.py NAME")
    run_stage(f"tune@{sys.argv[1]}", lambda say: main(say, sys.argv[1]))
