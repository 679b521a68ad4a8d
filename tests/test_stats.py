import math

import numpy as np
import pytest
from scipy import stats

from gradsort.history import History
from gradsort.report import write_comparison, write_summary
from gradsort.stats import mean_ci, paired_difference


def test_mean_ci_is_the_t_interval_of_the_mean():
    # By hand: mean 3, sd sqrt(2.5), sem sqrt(0.5), t(0.975, 4) = 2.776445 -> 3 -/+ 1.963243.
    result = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    assert result["mean"] == 3.0 and result["std"] == pytest.approx(math.sqrt(2.5))
    assert result["ci_low"] == pytest.approx(1.036757, abs=1e-6)
    assert result["ci_high"] == pytest.approx(4.963243, abs=1e-6)
    values = np.array([2.81, 2.77, 2.86, 2.79, 2.83])
    low, high = stats.t.interval(0.95, 4, loc=values.mean(), scale=stats.sem(values))
    got = mean_ci(values)
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((low, high), rel=1e-12)


def test_mean_ci_of_one_value_or_no_spread():
    one = mean_ci([1.5])
    assert one["mean"] == 1.5 and one["std"] == 0.0 and math.isnan(one["ci_low"])
    flat = mean_ci([0.1, 0.1, 0.1])
    assert flat["ci_low"] == flat["ci_high"] == flat["mean"] == pytest.approx(0.1)
    assert math.isnan(mean_ci([1.0, math.nan])["mean"])


def test_paired_difference_is_the_paired_t_test():
    sorted_loss = np.array([2.80, 2.77, 2.86, 2.79, 2.83])
    adam_loss = np.array([1.10, 1.35, 1.20, 1.05, 1.36])
    result = paired_difference(sorted_loss, adam_loss)
    diff = sorted_loss - adam_loss
    t = diff.mean() / (diff.std(ddof=1) / math.sqrt(5))
    assert result["diff"] == pytest.approx(diff.mean())
    assert result["p"] == pytest.approx(2 * stats.t.sf(abs(t), 4), rel=1e-9)
    assert result["p"] == pytest.approx(stats.ttest_rel(sorted_loss, adam_loss).pvalue)
    half = stats.t.ppf(0.975, 4) * diff.std(ddof=1) / math.sqrt(5)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx(
        (diff.mean() - half, diff.mean() + half)
    )
    # pairing matters: an unpaired test of the same numbers gives another p-value
    assert result["p"] != pytest.approx(stats.ttest_ind(sorted_loss, adam_loss).pvalue)


def test_paired_difference_without_enough_pairs():
    assert math.isnan(paired_difference([1.0], [2.0])["p"])
    same_shift = paired_difference([2.0, 3.0], [1.0, 2.0])
    assert same_shift["diff"] == 1.0 and math.isnan(same_shift["ci_low"])
    with pytest.raises(ValueError, match="equal lengths"):
        paired_difference([1.0, 2.0], [1.0])


def histories(finals, test=None):
    return [
        History(
            [1.0, 0.9],
            [2.0, v],
            [0.1, 0.2 + v / 10],
            initial_val_loss=2.3,
            test_loss=None if test is None else test[i],
            test_acc=None if test is None else 0.5,
        )
        for i, v in enumerate(finals)
    ]


def test_comparison_reports_intervals_and_paired_differences(tmp_path):
    adam, sorted_adam = [1.1, 1.3, 1.2], [2.8, 2.75, 2.9]
    runs = {
        "adam": histories(adam, test=[1.0, 1.1, 1.2]),
        "sorted_adam": histories(sorted_adam, test=[2.7, 2.8, 2.6]),
    }
    metrics = write_comparison(
        tmp_path / "c.json",
        tmp_path / "curves.csv",
        tmp_path / "s.csv",
        {"adam": 1e-2, "sorted_adam": 1e-5},
        runs,
        epochs=2,
        torch_threads=1,
        finals_path=tmp_path / "finals.csv",
    )
    ci = mean_ci(sorted_adam)
    got = metrics["sorted_adam"]
    assert (got["final_val_loss_ci_low"], got["final_val_loss_ci_high"]) == (
        ci["ci_low"],
        ci["ci_high"],
    )
    assert got["initial_val_loss"] == 2.3 and "test_loss_ci_low" in got
    vs = got["vs_adam"]
    assert vs["final_val_loss_p"] == pytest.approx(stats.ttest_rel(sorted_adam, adam).pvalue)
    assert vs["test_loss_diff"] == pytest.approx(np.mean([1.7, 1.7, 1.4]))
    assert "vs_adam" not in metrics["adam"]
    lines = (tmp_path / "finals.csv").read_text().splitlines()
    assert lines[0] == (
        "optimizer,seed,lr,initial_val_loss,final_val_loss,final_val_acc,min_val_loss,"
        "test_loss,test_acc"
    )
    assert len(lines) == 7 and lines[4].startswith("sorted_adam,0,1e-05,2.3,2.8,")

    setup = {
        "protocol": "holdout",
        "holdout_fraction": 0.2,
        "seeds": 3,
        "epochs": 2,
        "trials": 15,
        "tune_epochs": 5,
    }
    tuned = {"adam": {"lr_edge": "none"}, "sorted_adam": {"lr_edge": "low"}}
    specs = {"adam": ("adam", "none", False), "sorted_adam": ("adam", "sort", False)}
    text = write_summary(tmp_path / "summary.md", metrics, specs, tuned, setup)
    assert text == (tmp_path / "summary.md").read_text()
    assert "| `sorted_adam` | adam, sort | 1e-05 (at low edge) | 2.817 ± 0.076 [" in text
    assert "| `adam` (Adam) | 0.01 | 0.00972 (0.0097-0.0112) |" in text
    assert "lies at the low edge of the search range" in text
    assert f"p={vs['test_loss_p']:.2g}" in text


def test_paired_script_pairs_any_two_optimizers(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    runs = {
        "adam": histories([1.1, 1.3, 1.2]),
        "sorted_adam": histories([2.8, 2.75, 2.9]),
        "shuffled_adam": histories([2.3, 2.31, 2.29]),
    }
    lrs = {"adam": 1e-2, "sorted_adam": 1e-5, "shuffled_adam": 1e-3}
    table = tmp_path / "finals.csv"
    write_comparison(
        tmp_path / "c.json", tmp_path / "c.csv", tmp_path / "s.csv", lrs, runs, 2, 1, table
    )
    script = Path(__file__).resolve().parents[1] / "scripts/paired.py"
    out = subprocess.run(
        [sys.executable, str(script), "sorted_adam", "shuffled_adam", "--table", str(table)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    want = paired_difference([2.8, 2.75, 2.9], [2.3, 2.31, 2.29])
    line = next(s for s in out.splitlines() if s.strip().startswith("final_val_loss"))
    assert line.split()[1] == f"{want['diff']:+.4f}" and f"p={want['p']:.2g}" in line
    missing = subprocess.run(
        [sys.executable, str(script), "adam", "nope", "--table", str(table)],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"paired: error: {table}: no seed holds both adam and nope"
