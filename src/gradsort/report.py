"""Metrics, curve tables and figures of the comparison."""

import csv
from pathlib import Path

import numpy as np

from gradsort.files import atomic_path, write_csv, write_json
from gradsort.history import History

CURVE_FIELDS = (
    "optimizer",
    "epoch",
    "train_loss",
    "val_loss",
    "val_loss_std",
    "val_acc",
    "val_acc_std",
)
SEED_FIELDS = ("optimizer", "seed", "epoch", "train_loss", "val_loss", "val_acc")


def _padded(histories: list[History], name: str, epochs: int) -> np.ndarray:
    """A seeds x epochs array of one History field; epochs after a divergence are NaN."""
    table = np.full((len(histories), epochs), np.nan)
    for i, history in enumerate(histories):
        values = getattr(history, name)
        table[i, : len(values)] = values
    return table


def _spread(values: np.ndarray) -> np.ndarray:
    """Sample standard deviation over seeds (axis 0); 0 for a single seed."""
    if len(values) < 2:
        return np.zeros(values.shape[1:])
    return values.std(axis=0, ddof=1)


def summarize(best_lr: float, histories: list[History], epochs: int) -> tuple[dict, list[dict]]:
    """One optimizer's metrics (means over seeds, std beside) and its mean curve rows."""
    train_loss, val_loss, val_acc = (
        _padded(histories, name, epochs) for name in ("train_loss", "val_loss", "val_acc")
    )
    min_val_loss = np.min(val_loss, axis=1)
    metrics = {
        "best_lr": best_lr,
        "final_val_loss": float(val_loss[:, -1].mean()),
        "final_val_loss_std": float(_spread(val_loss[:, -1:])[0]),
        "final_val_acc": float(val_acc[:, -1].mean()),
        "final_val_acc_std": float(_spread(val_acc[:, -1:])[0]),
        "min_val_loss": float(min_val_loss.mean()),
        "min_val_loss_std": float(_spread(min_val_loss[:, None])[0]),
        "seeds": len(histories),
    }
    mean = {
        name: table.mean(axis=0)
        for name, table in (
            ("train_loss", train_loss),
            ("val_loss", val_loss),
            ("val_acc", val_acc),
        )
    }
    val_loss_std, val_acc_std = _spread(val_loss), _spread(val_acc)
    rows = [
        {
            "epoch": e + 1,
            "train_loss": float(mean["train_loss"][e]),
            "val_loss": float(mean["val_loss"][e]),
            "val_loss_std": float(val_loss_std[e]),
            "val_acc": float(mean["val_acc"][e]),
            "val_acc_std": float(val_acc_std[e]),
        }
        for e in range(epochs)
    ]
    return metrics, rows


def write_comparison(
    metrics_path: Path,
    curves_path: Path,
    seeds_path: Path,
    best_lrs: dict[str, float],
    histories: dict[str, list[History]],
    epochs: int,
    torch_threads: int,
) -> dict:
    """Write metrics keyed by optimizer, the mean curves and the per-seed curves (long tables)."""
    metrics = {}
    curve_rows = []
    seed_rows = []
    for name, runs in histories.items():
        metrics[name], rows = summarize(best_lrs[name], runs, epochs)
        metrics[name]["torch_threads"] = torch_threads
        curve_rows += [{"optimizer": name, **row} for row in rows]
        for seed, history in enumerate(runs):
            seed_rows += [{"optimizer": name, "seed": seed, **row} for row in history.rows()]
    write_csv(curves_path, curve_rows, CURVE_FIELDS)
    write_csv(seeds_path, seed_rows, SEED_FIELDS)
    write_json(metrics_path, metrics)
    return metrics


def read_curves(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """The mean curves by optimizer, as arrays by column; empty cells read as NaN."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    curves: dict[str, dict[str, np.ndarray]] = {}
    for name in dict.fromkeys(row["optimizer"] for row in rows):
        mine = [row for row in rows if row["optimizer"] == name]
        curves[name] = {
            key: np.array([float(row[key]) if row[key] != "" else np.nan for row in mine])
            for key in CURVE_FIELDS[1:]
        }
    return curves


def plot_comparison(
    path: Path, curves: dict[str, dict[str, np.ndarray]], best_lrs: dict[str, float]
) -> None:
    """Validation loss per epoch, one line per optimizer with a band of one std over seeds."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curve in curves.items():
        mean, std = curve["val_loss"], curve["val_loss_std"]
        (line,) = ax.plot(curve["epoch"], mean, label=f"{name} (lr={best_lrs[name]:.2g})")
        ax.fill_between(curve["epoch"], mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation loss (cross-entropy)")
    ax.set_title("mnist1d MLP: validation loss, mean and std over seeds")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
