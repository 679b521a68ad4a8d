"""Metrics, curve tables and figures of the comparison."""

import csv
import math
from pathlib import Path

import numpy as np

from gradsort.data import NUM_CLASSES
from gradsort.files import atomic_path, write_csv, write_json
from gradsort.history import History
from gradsort.stats import mean_ci, paired_difference

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
FINAL_FIELDS = (
    "optimizer",
    "seed",
    "lr",
    "initial_val_loss",
    "final_val_loss",
    "final_val_acc",
    "min_val_loss",
    "test_loss",
    "test_acc",
)


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


def final_values(histories: list[History], epochs: int) -> dict[str, np.ndarray]:
    """Per seed: the final validation loss and accuracy, the minimum validation loss, the
    initial validation loss and, where scored, the test loss and accuracy (NaN where not)."""
    val_loss, val_acc = (_padded(histories, name, epochs) for name in ("val_loss", "val_acc"))

    def scalar(name):
        return np.array(
            [np.nan if getattr(h, name) is None else getattr(h, name) for h in histories]
        )

    values = {
        "final_val_loss": val_loss[:, -1],
        "final_val_acc": val_acc[:, -1],
        "min_val_loss": np.min(val_loss, axis=1),
        "initial_val_loss": scalar("initial_val_loss"),
    }
    if any(h.test_loss is not None for h in histories):
        values["test_loss"] = scalar("test_loss")
        values["test_acc"] = scalar("test_acc")
    return values


def summarize(best_lr: float, histories: list[History], epochs: int) -> tuple[dict, list[dict]]:
    """One optimizer's metrics and its mean curve rows.

    Each of the final validation loss and accuracy, the minimum validation loss and the test
    loss and accuracy (when scored) is reported as its mean over seeds, with ``_std`` (sample
    standard deviation) and ``_ci_low`` / ``_ci_high`` (95% t interval of the mean) beside it.
    """
    train_loss, val_loss, val_acc = (
        _padded(histories, name, epochs) for name in ("train_loss", "val_loss", "val_acc")
    )
    metrics = {"best_lr": best_lr}
    for name, values in final_values(histories, epochs).items():
        if name == "initial_val_loss":
            metrics[name] = float(values.mean())
            continue
        summary = mean_ci(values)
        metrics[name] = summary["mean"]
        metrics[f"{name}_std"] = summary["std"]
        metrics[f"{name}_ci_low"] = summary["ci_low"]
        metrics[f"{name}_ci_high"] = summary["ci_high"]
    metrics["seeds"] = len(histories)
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


# The final values compared between optimizers seed by seed.
PAIRED = ("final_val_loss", "final_val_acc", "test_loss", "test_acc")


def paired_metrics(values: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict:
    """The paired differences ``values - reference`` of the PAIRED values both have:
    ``<name>_diff`` with its 95% interval (``_diff_ci_low``, ``_diff_ci_high``) and the
    paired t-test's p-value (``<name>_p``)."""
    out = {}
    for name in PAIRED:
        if name in values and name in reference:
            result = paired_difference(values[name], reference[name])
            out[f"{name}_diff"] = result["diff"]
            out[f"{name}_diff_ci_low"] = result["ci_low"]
            out[f"{name}_diff_ci_high"] = result["ci_high"]
            out[f"{name}_p"] = result["p"]
    return out


def write_comparison(
    metrics_path: Path,
    curves_path: Path,
    seeds_path: Path,
    best_lrs: dict[str, float],
    histories: dict[str, list[History]],
    epochs: int,
    torch_threads: int,
    finals_path: Path | None = None,
) -> dict:
    """Write metrics keyed by optimizer, the mean curves and the per-seed curves (long tables).

    Every optimizer after the first gets ``vs_<first>``: its paired differences to the first
    one over the same seeds (``paired_metrics``). ``finals_path``, if given, receives the
    per-seed final values as a table.
    """
    metrics = {}
    curve_rows = []
    seed_rows = []
    final_rows = []
    finals = {name: final_values(runs, epochs) for name, runs in histories.items()}
    reference = next(iter(histories), None)
    for name, runs in histories.items():
        metrics[name], rows = summarize(best_lrs[name], runs, epochs)
        if name != reference:
            metrics[name][f"vs_{reference}"] = paired_metrics(finals[name], finals[reference])
        metrics[name]["torch_threads"] = torch_threads
        curve_rows += [{"optimizer": name, **row} for row in rows]
        for seed, history in enumerate(runs):
            seed_rows += [{"optimizer": name, "seed": seed, **row} for row in history.rows()]
            final_rows.append(
                {"optimizer": name, "seed": seed, "lr": best_lrs[name]}
                | {key: float(values[seed]) for key, values in finals[name].items()}
            )
    write_csv(curves_path, curve_rows, CURVE_FIELDS)
    write_csv(seeds_path, seed_rows, SEED_FIELDS)
    if finals_path is not None:
        write_csv(finals_path, final_rows, FINAL_FIELDS)
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


TRIAL_FIELDS = ("trial", "lr", "value", "state", "fail_reason")


TRIAL_STATES = ("complete", "fail", "pruned", "running", "waiting")


def read_trials(path: Path) -> list[dict]:
    """The trial rows of a tune stage's table, lr and value as floats (None where empty);
    raises ValueError saying what is wrong with a table the tune stage did not write."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        fields = reader.fieldnames or []
    missing = [name for name in TRIAL_FIELDS if name not in fields]
    if missing:
        raise ValueError(f"columns {missing} missing")

    def number(row, key, positive):
        text = row[key]
        if text in ("", None):
            return None
        value = float(text)
        if not math.isfinite(value) or (positive and value <= 0):
            raise ValueError(f"trial {row['trial']}: {key}={text} is not a finite number")
        return value

    trials = []
    for row in rows:
        if None in row or row["state"] not in TRIAL_STATES:
            raise ValueError(f"row {row} is not a trial")
        trials.append(
            {
                **row,
                "trial": int(row["trial"]),
                "lr": number(row, "lr", positive=True),
                "value": number(row, "value", positive=False),
            }
        )
    return trials


def _figure(size=(7, 4.5)):
    # A bare Figure with an Agg canvas: no pyplot state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def _label(name: str, lr: float, edge: str | None) -> str:
    mark = f", at the {edge} edge of the search range" if edge else ""
    return f"{name} (lr={lr:.2g}{mark})"


def _curve_figure(curves, best_lrs, edges, column):
    """One line per optimizer of ``column`` against epoch, with a band of one std."""
    edges = edges or {}
    fig, ax = _figure()
    for name, curve in curves.items():
        mean, std = curve[column], curve[f"{column}_std"]
        (line,) = ax.plot(curve["epoch"], mean, label=_label(name, best_lrs[name], edges.get(name)))
        ax.fill_between(curve["epoch"], mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    return fig, ax


def plot_comparison(
    path: Path,
    curves: dict[str, dict[str, np.ndarray]],
    best_lrs: dict[str, float],
    edges: dict[str, str | None] | None = None,
    initial_loss: float | None = None,
    split: str = "validation",
):
    """Validation loss per epoch, one line per optimizer with a band of one std over seeds,
    and the reference lines of chance (ln of the number of classes) and of the initial
    weights' loss. An lr at an edge of the search range (``edges``) is named in the legend.
    Returns the figure."""
    fig, ax = _curve_figure(curves, best_lrs, edges, "val_loss")
    chance = math.log(NUM_CLASSES)
    ax.axhline(chance, color="0.4", ls="--", lw=1, label=f"chance: ln {NUM_CLASSES} = {chance:.3f}")
    if initial_loss is not None and math.isfinite(initial_loss):
        ax.axhline(
            initial_loss, color="0.2", ls=":", lw=1, label=f"initial weights: {initial_loss:.3f}"
        )
    ax.set_ylabel(f"{split} loss (cross-entropy)")
    ax.set_title(f"mnist1d MLP: {split} loss, mean and std over seeds")
    ax.legend(fontsize="small")
    _save(fig, path)
    return fig


def plot_accuracy(
    path: Path,
    curves: dict[str, dict[str, np.ndarray]],
    best_lrs: dict[str, float],
    edges: dict[str, str | None] | None = None,
    split: str = "validation",
):
    """Validation accuracy per epoch, one line per optimizer with a band of one std over
    seeds, and chance accuracy. Returns the figure."""
    fig, ax = _curve_figure(curves, best_lrs, edges, "val_acc")
    ax.axhline(1 / NUM_CLASSES, color="0.4", ls="--", lw=1, label=f"chance: 1/{NUM_CLASSES}")
    ax.set_ylabel(f"{split} accuracy")
    ax.set_title(f"mnist1d MLP: {split} accuracy, mean and std over seeds")
    ax.set_ylim(0, 1)
    ax.legend(fontsize="small")
    _save(fig, path)
    return fig


def plot_trials(
    path: Path,
    trials: dict[str, list[dict]],
    tuned: dict[str, dict],
):
    """Each optimizer's tuning trials: objective against lr, both on log axes. The best
    trial is a star, a failed trial a cross on the top edge, and the bands within
    EDGE_FACTOR of the search range's ends are shaded; ``tuned`` holds each optimizer's tune
    metrics (``best_lr``, ``lr_low``, ``lr_high``, ``lr_edge``). Returns the figure."""
    from matplotlib.transforms import blended_transform_factory

    from gradsort.tune import EDGE_FACTOR

    fig, ax = _figure()
    top = blended_transform_factory(ax.transData, ax.transAxes)
    ranges = {(t["lr_low"], t["lr_high"]) for t in tuned.values()}
    for low, high in sorted(ranges):
        ax.axvspan(low, low * EDGE_FACTOR, color="0.85", zorder=0)
        ax.axvspan(high / EDGE_FACTOR, high, color="0.85", zorder=0)
    for name, rows in trials.items():
        done = [r for r in rows if r["state"] == "complete" and None not in (r["value"], r["lr"])]
        failed = [r for r in rows if r["state"] == "fail" and r["lr"] is not None]
        edge = tuned[name].get("lr_edge", "none")
        label = _label(name, tuned[name]["best_lr"], None if edge == "none" else edge)
        points = ax.scatter([r["lr"] for r in done], [r["value"] for r in done], label=label)
        color = points.get_facecolor()[0]
        best = min(done, key=lambda r: r["value"], default=None)
        if best is not None:
            ax.scatter(
                [best["lr"]],
                [best["value"]],
                marker="*",
                s=220,
                color=color,
                edgecolor="k",
                label=f"_best of {name}",  # "_": not in the legend
            )
        if failed:
            ax.scatter(
                [r["lr"] for r in failed],
                [0.97] * len(failed),
                marker="x",
                color=color,
                transform=top,
                label=f"{name}: {len(failed)} failed",
                clip_on=False,
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("tuning objective (validation loss)")
    ax.set_title(f"Tuning trials (star: best; shaded: within {EDGE_FACTOR:g}x of the range's ends)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    _save(fig, path)
    return fig


# The published run (one seed, unseeded TPE) and the re-runs of its setup, by (base, transform).
PUBLISHED = {
    ("adam", "none"): {
        "label": "Adam",
        "best_lr": 0.009722,
        "final_val_loss": 1.1640,
        "rerun_lr": (0.0097, 0.0112),
        "rerun_loss": (1.10, 1.29),
    },
    ("adam", "sort"): {
        "label": "SortedAdam",
        "best_lr": 0.000011,
        "final_val_loss": 2.7652,
        "rerun_lr": (1.1e-5, 1.2e-5),
        "rerun_loss": (2.78, 2.82),
    },
}


def _pm(metrics: dict, name: str, digits: int = 3) -> str:
    mean, std = metrics.get(name), metrics.get(f"{name}_std")
    if mean is None or not math.isfinite(mean):
        return "diverged"
    low, high = metrics.get(f"{name}_ci_low"), metrics.get(f"{name}_ci_high")
    ci = f" [{low:.{digits}f}, {high:.{digits}f}]" if low is not None and math.isfinite(low) else ""
    return f"{mean:.{digits}f} ± {std:.{digits}f}{ci}"


def _diff(vs: dict, name: str) -> str:
    diff = vs.get(f"{name}_diff")
    if diff is None or not math.isfinite(diff):
        return "n/a"
    low, high, p = (vs.get(f"{name}_{key}") for key in ("diff_ci_low", "diff_ci_high", "p"))
    if low is None or not math.isfinite(low):
        return f"{diff:+.3f}"
    return f"{diff:+.3f} [{low:+.3f}, {high:+.3f}], p={p:.2g}"


def write_summary(
    path: Path,
    metrics: dict[str, dict],
    specs: dict[str, tuple[str, str, bool]],
    tuned: dict[str, dict],
    setup: dict,
) -> str:
    """Write the results section as Markdown and return it.

    ``specs`` gives each optimizer's (base, transform, has_kwargs); an optimizer whose base
    and transform match a published one (with torch's default keywords) is compared to it.
    ``tuned`` holds the tune metrics; ``setup`` the protocol, seeds, epochs and trials.
    """
    holdout = setup["protocol"] == "holdout"
    split = "holdout validation" if holdout else "validation (mnist1d's test split)"
    names = list(metrics)
    reference = names[0]
    lines = [
        "# Results",
        "",
        "Written by the `compare` stage on every run; do not edit.",
        "",
        f"Protocol `{setup['protocol']}`: "
        + (
            f"tuned and validated on a stratified {setup['holdout_fraction']:g} holdout of the "
            "train split; the test split is scored once, after training."
            if holdout
            else "tuned and validated on mnist1d's test split, as published; no separate test."
        ),
        f"{setup['trials']} tuning trials of {setup['tune_epochs']} epochs per optimizer, then "
        f"{setup['epochs']} epochs at the best lr over {setup['seeds']} paired seeds.",
        "Values are mean ± sample std [95% t interval of the mean] over seeds; differences are "
        f"paired by seed against `{reference}`, with the paired t-test's p-value.",
        "",
    ]
    header = ["optimizer", "base, transform", "best lr", f"final {split} loss", "final accuracy"]
    if holdout:
        header += ["test loss", "test accuracy"]
    header.append(f"{'test' if holdout else 'final'} loss difference to {reference} (paired)")
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        m = metrics[name]
        base, transform, _ = specs[name]
        edge = tuned.get(name, {}).get("lr_edge", "none")
        lr = f"{m['best_lr']:.3g}" + (f" (at {edge} edge)" if edge != "none" else "")
        row = [
            f"`{name}`",
            f"{base}, {transform}",
            lr,
            _pm(m, "final_val_loss"),
            _pm(m, "final_val_acc"),
        ]
        if holdout:
            row += [_pm(m, "test_loss"), _pm(m, "test_acc")]
        key = "test_loss" if holdout else "final_val_loss"
        row.append("reference" if name == reference else _diff(m.get(f"vs_{reference}", {}), key))
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "## Against the published run", ""]
    matched = [n for n in names if (specs[n][0], specs[n][1]) in PUBLISHED and not specs[n][2]]
    if not matched:
        lines.append("No optimizer here has the base and transform of a published one.")
    else:
        if holdout:
            lines += [
                "The published run used the `seed` protocol; under `holdout` the numbers are "
                "measured on other data and compare only loosely.",
                "",
            ]
        lines += [
            "| optimizer | best lr here | published (re-runs) "
            "| final loss here | published (re-runs) |",
            "|---|---|---|---|---|",
        ]
        for name in matched:
            pub = PUBLISHED[specs[name][:2]]
            m = metrics[name]
            lines.append(
                f"| `{name}` ({pub['label']}) | {m['best_lr']:.3g} "
                f"| {pub['best_lr']:.3g} ({pub['rerun_lr'][0]:.3g}-{pub['rerun_lr'][1]:.3g}) "
                f"| {_pm(m, 'final_val_loss')} "
                f"| {pub['final_val_loss']:.4f} "
                f"({pub['rerun_loss'][0]:.2f}-{pub['rerun_loss'][1]:.2f}) |"
            )
    edges = [n for n in names if tuned.get(n, {}).get("lr_edge", "none") != "none"]
    if edges:
        lines += [""] + [
            f"- `{n}`: best lr {metrics[n]['best_lr']:.3g} lies at the {tuned[n]['lr_edge']} edge "
            "of the search range; the optimum may lie outside it."
            for n in edges
        ]
    text = "\n".join(lines) + "\n"
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
    return text
