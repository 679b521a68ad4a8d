"""The pipeline against the plain program (benchmarks/plain.py), side by side, on the defaults.

Runs the plain program, then a cold ``dvc repro --force`` in a fresh clone of this repository, for
each seed count asked for; prints per stage and in total the wall time of both and their
ratio, the achieved GFLOP/s of the training arithmetic against this machine's measured fp32
matmul peak, and the peak resident memory of each run.

Usage: python benchmarks/study_speed.py [--seeds 1 5]
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("generate", "tune@adam", "tune@sorted_adam", "compare")


def matmul_peak_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Median GFLOP/s of an n x n fp32 matmul on this machine."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def protocol_gflop(params: dict) -> float:
    """Training arithmetic of the protocol: forward and backward of every step, and the
    validation passes, for both optimizers (about 6 and 2 FLOP per weight and sample)."""
    data, model, train, tune = params["data"], params["model"], params["train"], params["tune"]
    widths = [40] + [model["hidden_size"]] * model["hidden_layers"] + [10]
    weights = sum(a * b for a, b in zip(widths, widths[1:]))
    n_train = int(data["num_samples"] * data["train_split"])
    n_val = data["num_samples"] - n_train
    per_epoch = 6 * weights * n_train + 2 * weights * n_val
    epochs = tune["trials"] * tune["epochs"] + train["seeds"] * train["epochs"]
    return 2 * epochs * per_epoch / 1e9


def timed(cmd: list[str], cwd: Path, env: dict | None = None) -> tuple[float, int, str]:
    """Wall seconds, peak RSS in MiB (of the process and the children it waited for), stdout."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "DVC_NO_ANALYTICS": "1", **(env or {})},
    )
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{cmd} failed:\n{out}")
    return wall, usage.ru_maxrss // 1024, out


def import_torch_seconds(repeats: int = 3) -> float:
    """Median wall time of a fresh ``python -c "import torch"``: what each stage pays first."""
    times = [timed([sys.executable, "-c", "import torch"], ROOT)[0] for _ in range(repeats)]
    return statistics.median(times)


def run_pipeline(seeds: int) -> tuple[float, int, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        path = clone / "params.yaml"
        params = yaml.safe_load(path.read_text())
        params["train"]["seeds"] = seeds
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        env = {  # the stages run the clone's own code with this interpreter
            "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
            "PYTHONPATH": str(clone / "src"),
        }
        wall, rss, out = timed([sys.executable, "-m", "dvc", "repro", "--force"], clone, env)
    stages = {m[1]: float(m[2]) for m in re.finditer(r"^(\S+): done in ([\d.]+) s$", out, re.M)}
    return wall, rss, stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 5])
    args = parser.parse_args()
    peak = matmul_peak_gflops()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    print(f"fp32 matmul peak: {peak:.0f} GFLOP/s, {torch.get_num_threads()} threads")
    start_up = import_torch_seconds()
    print(f"python -c 'import torch': {start_up:.1f} s (median of 3)")

    for seeds in args.seeds:
        params["train"]["seeds"] = seeds
        gflop = protocol_gflop(params)
        plain_wall, plain_rss, out = timed(
            [sys.executable, str(ROOT / "benchmarks/plain.py"), "--seeds", str(seeds)], ROOT
        )
        plain = json.loads(out.strip().splitlines()[-1])["times"]
        wall, rss, stages = run_pipeline(seeds)

        print(f"\ntrain.seeds={seeds}: {gflop:.0f} GFLOP of training arithmetic")
        print(f"{'stage':<18} {'plain s':>8} {'pipeline s':>11} {'ratio':>6}")
        for stage in STAGES:
            print(
                f"{stage:<18} {plain[stage]:>8.1f} {stages.get(stage, float('nan')):>11.1f} "
                f"{stages.get(stage, float('nan')) / plain[stage]:>6.2f}"
            )
        tune_plain = plain["tune@adam"] + plain["tune@sorted_adam"]
        tune_pipe = stages.get("tune@adam", 0) + stages.get("tune@sorted_adam", 0)
        print(
            f"{'tune, both':<18} {tune_plain:>8.1f} {tune_pipe:>11.1f} "
            f"{tune_pipe / tune_plain:>6.2f}"
        )
        print(f"{'total (wall)':<18} {plain_wall:>8.1f} {wall:>11.1f} {wall / plain_wall:>6.2f}")
        outside = wall - sum(stages.values())
        print(
            f"pipeline outside its {len(stages)} stages' own work (process start, imports, "
            f"DVC): {outside:.1f} s, of which import torch ~{len(stages) * start_up:.1f} s"
        )
        for name, seconds, mib in (("plain", plain_wall, plain_rss), ("pipeline", wall, rss)):
            print(
                f"{name}: {gflop / seconds:.1f} GFLOP/s = {gflop / seconds / peak:.1%} of peak, "
                f"peak memory {mib} MiB"
            )


if __name__ == "__main__":
    main()
