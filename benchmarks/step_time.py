"""Median step time of plain Adam, the sorted wrapper and a plain torch.sort wrapper.

Run side by side on the default MLP (40-256-256-10) and batch size (128): the three
optimizers take turns step after step, so machine noise hits them alike. Prints the median
of ``optimizer.step()`` alone and of a whole training step (zero_grad, forward, backward,
step), and each one's ratio to plain Adam.

Usage: python benchmarks/step_time.py [--steps N] [--threads T]
"""

import argparse
import copy
import statistics
import time

import torch
from plain import TorchSortAdam  # benchmarks/ is on sys.path when run as a script
from torch.nn import functional as F

from gradsort import SortedGradientOptimizer
from gradsort.model import make_mlp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="timed steps per optimizer")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = make_mlp(40, 256, 2)
    x, y = torch.randn(128, 40), torch.randint(0, 10, (128,))
    runs = {}
    for name in ("adam", "sorted wrapper", "torch.sort wrapper"):
        m = copy.deepcopy(model)
        if name == "adam":
            opt = torch.optim.Adam(m.parameters(), lr=1e-5)
        elif name == "sorted wrapper":
            opt = SortedGradientOptimizer(torch.optim.Adam(m.parameters(), lr=1e-5))
        else:
            opt = TorchSortAdam(m.parameters(), lr=1e-5)
        runs[name] = (m, opt, [], [])

    for i in range(args.steps + 20):  # the first 20 steps warm up and are not counted
        for m, opt, step_times, total_times in runs.values():
            start = time.perf_counter()
            opt.zero_grad()
            F.cross_entropy(m(x), y).backward()
            before_step = time.perf_counter()
            opt.step()
            end = time.perf_counter()
            if i >= 20:
                step_times.append(end - before_step)
                total_times.append(end - start)

    base_step = statistics.median(runs["adam"][2])
    base_total = statistics.median(runs["adam"][3])
    print(f"{args.steps} steps each, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'optimizer':<20} {'step() us':>10} {'ratio':>6} {'train step us':>14} {'ratio':>6}")
    for name, (_, _, step_times, total_times) in runs.items():
        step, total = statistics.median(step_times), statistics.median(total_times)
        print(
            f"{name:<20} {step * 1e6:>10.0f} {step / base_step:>6.2f} "
            f"{total * 1e6:>14.0f} {total / base_total:>6.2f}"
        )


if __name__ == "__main__":
    main()
