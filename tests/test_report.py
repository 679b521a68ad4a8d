import json
import math

import numpy as np
import pytest

from gradsort.files import write_json
from gradsort.report import plot_comparison, read_curves, summarize, write_comparison
from gradsort.train import History


def strict_load(path):
    def refuse(constant):
        raise ValueError(f"non-finite constant {constant} in {path}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_summary_means_and_sample_std_over_seeds():
    runs = [
        History([1.0, 0.5], [2.0, 1.0], [0.2, 0.4]),
        History([1.0, 0.7], [2.0, 3.0], [0.2, 0.6]),
    ]
    metrics, rows = summarize(0.01, runs, epochs=2)
    assert metrics["final_val_loss"] == 2.0
    assert metrics["final_val_loss_std"] == pytest.approx(np.std([1.0, 3.0], ddof=1))
    assert metrics["final_val_acc"] == pytest.approx(0.5)
    assert metrics["min_val_loss"] == pytest.approx(1.5)  # mean of per-seed minima 1 and 2
    assert metrics["seeds"] == 2 and metrics["best_lr"] == 0.01
    assert [r["val_loss"] for r in rows] == [2.0, 2.0]
    assert rows[1]["train_loss"] == pytest.approx(0.6)


def test_single_seed_has_zero_spread():
    metrics, _ = summarize(0.01, [History([1.0], [2.0], [0.1])], epochs=1)
    assert metrics["final_val_loss_std"] == 0.0


def test_non_finite_values_are_written_as_null(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"a": {"x": float("nan"), "y": float("inf"), "z": 1.5}})
    assert strict_load(path) == {"a": {"x": None, "y": None, "z": 1.5}}


def test_diverged_run_keeps_files_strict(tmp_path):
    runs = {
        "adam": [History([1.0, 0.9], [2.0, 1.5], [0.1, 0.2])],
        "wild": [History([1.0], [math.inf], [0.1])],
    }
    metrics = write_comparison(
        tmp_path / "c.json",
        tmp_path / "curves.csv",
        tmp_path / "s.csv",
        {"adam": 1e-3, "wild": 10.0},
        runs,
        epochs=2,
        torch_threads=2,
    )
    loaded = strict_load(tmp_path / "c.json")
    assert loaded["wild"]["final_val_loss"] is None
    assert loaded["adam"]["final_val_loss"] == 1.5 and loaded["adam"]["torch_threads"] == 2
    assert metrics["adam"]["final_val_loss"] == 1.5
    curves = read_curves(tmp_path / "curves.csv")
    assert list(curves) == ["adam", "wild"]
    assert np.isnan(curves["wild"]["val_loss"]).all()
    assert "nan" not in (tmp_path / "curves.csv").read_text().lower()
    assert "inf" not in (tmp_path / "s.csv").read_text().lower()


def test_figure_renders_headless_with_one_line_per_optimizer(tmp_path, monkeypatch):
    monkeypatch.setenv("DISPLAY", ":99")  # no X server there
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    epochs = np.arange(1, 4)
    curves = {
        name: {
            "epoch": epochs,
            "val_loss": np.array([2.0, 1.5, 1.2]) + i,
            "val_loss_std": np.full(3, 0.1),
        }
        for i, name in enumerate(["adam", "sorted_adam", "shuffled_adam"])
    }
    lrs = {"adam": 0.0097, "sorted_adam": 1.1e-5, "shuffled_adam": 1e-3}
    captured = {}
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: captured.setdefault("fig", fig))
    plot_comparison(tmp_path / "p.png", curves, lrs)
    real_close(captured["fig"])
    ax = captured["fig"].axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["adam (lr=0.0097)", "sorted_adam (lr=1.1e-05)", "shuffled_adam (lr=0.001)"]
    assert len(ax.collections) == 3  # one spread band each
    assert ax.get_xlabel() == "epoch" and "validation loss" in ax.get_ylabel()
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
