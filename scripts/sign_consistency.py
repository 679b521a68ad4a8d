"""Measure how consistent each weight's gradient sign is across steps, per optimizer.

Usage: python scripts/sign_consistency.py [--lr 1e-4] [--steps 200] [--seeds 3]

Reads params.yaml (its optimizers, model, data protocol and batch size), data/mnist1d.npz
and, where present, metrics/tune/<name>.json; prints a Markdown table of
``gradsort.analysis.sign_stats`` per optimizer, at the common --lr and at the optimizer's
tuned best lr, each the mean over --seeds initial weights.
"""

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from gradsort.analysis import random_sign_consistency, sign_stats
from gradsort.data import load_dataset, protocol_splits
from gradsort.files import read_json
from gradsort.model import build_model, initial_state
from gradsort.optim import make_optimizer
from gradsort.params import load_params
from gradsort.stage import run_stage


def positive(text):
    value = float(text)
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def count(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr", type=positive, default=1e-4, help="common learning rate")
    parser.add_argument("--steps", type=count, default=200, help="mini-batch steps per run")
    parser.add_argument("--seeds", type=count, default=3, help="initial weights 0..seeds-1")
    args = parser.parse_args()
    # errors of params.yaml and the input files are one line, as in the stages
    run_stage("sign_consistency", lambda say: measure(args))


def measure(args):
    torch.set_num_threads(1)
    params = load_params(trial_step=False)
    data, model = params.data, params.model
    splits = protocol_splits(
        load_dataset("data/mnist1d.npz"), data.protocol, data.holdout_fraction, data.seed
    )
    features = splits.train.x.shape[1]
    print(
        f"{args.steps} steps of batch {params.train.batch_size}, mean over {args.seeds} seeds; "
        f"random signs give {random_sign_consistency(args.steps):.3f}\n"
    )
    print("| optimizer | lr | sign consistency | path coherence | Adam |m/sqrt(v)| |")
    print("|---|---|---|---|---|")
    for name, spec in params.optimizers.items():
        tune = Path(f"metrics/tune/{name}.json")
        lrs = [args.lr]
        best = read_json(tune).get("best_lr") if tune.is_file() else None
        if isinstance(best, float) and 0 < best < math.inf:
            lrs.append(best)
        for i, lr in enumerate(lrs):
            results = []
            for seed in range(args.seeds):
                state = initial_state(seed, features, model.hidden_size, model.hidden_layers)
                net = build_model(state, features, model.hidden_size, model.hidden_layers)
                optimizer = make_optimizer(
                    net.parameters(), spec.base, lr, spec.transform, seed, **spec.kwargs
                )
                results.append(
                    sign_stats(
                        net, optimizer, splits.train, args.steps, params.train.batch_size, seed
                    )
                )
            mean = {key: np.mean([r[key] for r in results]) for key in results[0]}
            direction = (
                "n/a" if math.isnan(mean["adam_direction"]) else f"{mean['adam_direction']:.3f}"
            )
            which = "common" if i == 0 else "tuned"
            print(
                f"| `{name}` | {lr:.3g} ({which}) | {mean['sign_consistency']:.3f} "
                f"| {mean['path_coherence']:.3f} | {direction} |"
            )


if __name__ == "__main__":
    main()
