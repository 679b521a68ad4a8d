import json
import math

import numpy as np
import pytest

from gradsort.files import write_json
from gradsort.report import (
    plot_accuracy,
    plot_comparison,
    plot_trials,
    read_curves,
    read_trials,
    summarize,
    write_comparison,
)
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


def curves_of(names):
    epochs = np.arange(1, 4)
    return {
        name: {
            "epoch": epochs,
            "val_loss": np.array([2.0, 1.5, 1.2]) + i,
            "val_loss_std": np.full(3, 0.1),
            "val_acc": np.array([0.2, 0.4, 0.5]) - 0.05 * i,
            "val_acc_std": np.full(3, 0.02),
        }
        for i, name in enumerate(names)
    }


def is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_loss_figure_has_a_line_per_optimizer_and_the_reference_lines(tmp_path, monkeypatch):
    monkeypatch.setenv("DISPLAY", ":99")  # no X server there
    lrs = {"adam": 0.0097, "sorted_adam": 1.1e-5, "shuffled_adam": 1e-3}
    edges = {"sorted_adam": "low"}
    fig = plot_comparison(tmp_path / "p.png", curves_of(lrs), lrs, edges, initial_loss=2.31)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == [
        "adam (lr=0.0097)",
        "sorted_adam (lr=1.1e-05, at the low edge of the search range)",
        "shuffled_adam (lr=0.001)",
        "chance: ln 10 = 2.303",
        "initial weights: 2.310",
    ]
    chance, initial = ax.get_lines()[3:]
    assert chance.get_ydata()[0] == pytest.approx(math.log(10)) and initial.get_ydata()[0] == 2.31
    assert len(ax.collections) == 3  # one spread band each
    assert ax.get_xlabel() == "epoch" and "validation loss" in ax.get_ylabel()
    assert is_png(tmp_path / "p.png")


def test_accuracy_figure_has_a_line_per_optimizer_and_chance(tmp_path):
    lrs = {"adam": 0.0097, "sorted_adam": 1.1e-5}
    fig = plot_accuracy(tmp_path / "a.png", curves_of(lrs), lrs, split="holdout validation")
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == [
        "adam (lr=0.0097)",
        "sorted_adam (lr=1.1e-05)",
        "chance: 1/10",
    ]
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), [0.15, 0.35, 0.45])
    assert ax.get_ylabel() == "holdout validation accuracy" and is_png(tmp_path / "a.png")


def test_trials_figure_marks_best_failed_and_edges(tmp_path):
    def rows(pairs):
        return [
            {"trial": i, "lr": lr, "value": v, "state": "fail" if v is None else "complete"}
            for i, (lr, v) in enumerate(pairs)
        ]

    trials = {
        "adam": rows([(1e-3, 1.0), (1e-2, 0.8), (5e-2, 0.9)]),
        "sorted_adam": rows([(1.1e-5, 2.3), (1e-3, 2.9), (1e-1, None), (5e-2, None)]),
    }
    tuned = {
        "adam": {"best_lr": 1e-2, "lr_low": 1e-5, "lr_high": 1e-1, "lr_edge": "none"},
        "sorted_adam": {"best_lr": 1.1e-5, "lr_low": 1e-5, "lr_high": 1e-1, "lr_edge": "low"},
    }
    fig = plot_trials(tmp_path / "t.png", trials, tuned)
    ax = fig.axes[0]
    # per optimizer: its trials and its best; the failed ones of sorted_adam
    series = [(c.get_label(), len(c.get_offsets())) for c in ax.collections]
    assert series == [
        ("adam (lr=0.01)", 3),
        ("_best of adam", 1),
        ("sorted_adam (lr=1.1e-05, at the low edge of the search range)", 2),
        ("_best of sorted_adam", 1),
        ("sorted_adam: 2 failed", 2),
    ]
    np.testing.assert_allclose(ax.collections[3].get_offsets(), [[1.1e-5, 2.3]])
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert len(ax.patches) == 2  # the shaded bands at both ends of the one range
    assert is_png(tmp_path / "t.png")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("garbage\n", "columns"),
        ("", "columns"),
        ("trial,lr,value,state,fail_reason\n0,0.01,1.0\n", "not a trial"),
        ("trial,lr,value,state,fail_reason\n0,-0.01,1.0,complete,\n", "lr=-0.01"),
        ("trial,lr,value,state,fail_reason\n0,0.01,inf,complete,\n", "value=inf"),
        ("trial,lr,value,state,fail_reason\n0,0.01,1.0,weird,\n", "not a trial"),
    ],
)
def test_trial_tables_that_the_tune_stage_did_not_write_are_refused(tmp_path, text, message):
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_trials(path)


def test_trial_table_round_trip_keeps_a_trial_without_lr(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(
        "trial,lr,value,state,fail_reason\n0,,,fail,no heartbeat\n1,0.01,0.9,complete,\n"
    )
    rows = read_trials(path)
    assert rows[0]["lr"] is None and rows[1]["lr"] == 0.01 and rows[1]["value"] == 0.9
