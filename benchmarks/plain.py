"""The plain program: the published protocol as one writes it first, one model at a time.

Per-batch loop over index batches, a ``torch.sort`` wrapper, sequential Optuna studies of 15
trials x 5 epochs, then 25 epochs per optimizer and seed. It is the baseline that
``study_speed.py`` times the pipeline against; it prints its phase times as JSON.

Usage: python benchmarks/plain.py [--seeds N] [--num-samples N]
"""

import argparse
import json
import time

import optuna
import torch
from mnist1d.data import get_dataset_args, make_dataset
from torch import nn
from torch.nn import functional as F


class TorchSortAdam:
    """Sort every gradient with torch.sort, then step Adam."""

    def __init__(self, params, lr):
        self.adam = torch.optim.Adam(params, lr=lr)

    def zero_grad(self):
        self.adam.zero_grad()

    @torch.no_grad()
    def step(self):
        for group in self.adam.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad = torch.sort(p.grad.flatten()).values.view_as(p.grad)
        self.adam.step()


def mlp():
    return nn.Sequential(
        nn.Linear(40, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
    )


def run(init, make_opt, lr, data, epochs, seed):
    x, y, x_val, y_val = data
    model = mlp()
    model.load_state_dict(init)
    opt = make_opt(model.parameters(), lr)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 128):
            idx = order[i : i + 128]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        with torch.no_grad():
            losses.append(F.cross_entropy(model(x_val), y_val).item())
    return losses


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--num-samples", type=int, default=10000)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    times = {}

    start = time.perf_counter()
    dargs = get_dataset_args()
    dargs.num_samples = args.num_samples
    d = make_dataset(dargs)
    data = (
        torch.tensor(d["x"], dtype=torch.float32),
        torch.tensor(d["y"]),
        torch.tensor(d["x_test"], dtype=torch.float32),
        torch.tensor(d["y_test"]),
    )
    times["generate"] = time.perf_counter() - start

    optimizers = {"adam": lambda p, lr: torch.optim.Adam(p, lr=lr), "sorted_adam": TorchSortAdam}
    inits = []
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        inits.append(mlp().state_dict())
    best = {}
    for name, make_opt in optimizers.items():
        start = time.perf_counter()
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))

        def objective(trial, make_opt=make_opt):
            lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
            return min(run(inits[0], make_opt, lr, data, 5, 0))

        study.optimize(objective, n_trials=15)
        best[name] = study.best_params["lr"]
        times[f"tune@{name}"] = time.perf_counter() - start

    start = time.perf_counter()
    final = {name: [] for name in optimizers}
    for seed in range(args.seeds):
        for name, make_opt in optimizers.items():
            final[name].append(run(inits[seed], make_opt, best[name], data, 25, seed)[-1])
    times["compare"] = time.perf_counter() - start
    print(json.dumps({"times": times, "best_lr": best, "final_val_loss": final}))


if __name__ == "__main__":
    main()
