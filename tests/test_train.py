import math

import numpy as np
import pytest
import torch

from gradsort import train as train_module
from gradsort.data import make_dataset, to_splits
from gradsort.history import DivergedError, History
from gradsort.params import ModelParams, OptimizerSpec
from gradsort.train import compare, train_from
from gradsort.tune import (
    NoTrialCompletedError,
    at_edge,
    edge_warning,
    run_study,
    study_summary,
    trial_rows,
)

MODEL = ModelParams(hidden_size=16, hidden_layers=2)
ADAM = OptimizerSpec("adam", "none")
SORTED = OptimizerSpec("adam", "sort")


@pytest.fixture(scope="module")
def splits():
    return to_splits(make_dataset(300, 0.8, seed=0))


def test_every_optimizer_of_a_seed_starts_from_the_same_weights(splits, monkeypatch):
    starts = {}  # (optimizer base, seed) -> initial tensors
    real_batched, real_single = train_module.train_batched, train_module.train_from

    def spy_batched(states, base, *args, **kwargs):
        for seed, state in enumerate(states):
            starts[(base, seed)] = [t.clone() for t in state.values()]
        return real_batched(states, base, *args, **kwargs)

    def spy_single(state, model, spec, lr, *args):
        starts[(spec.base, args[4])] = [t.clone() for t in state.values()]
        return real_single(state, model, spec, lr, *args)

    monkeypatch.setattr(train_module, "train_batched", spy_batched)
    monkeypatch.setattr(train_module, "train_from", spy_single)
    specs = {
        "adam": ADAM,
        "sorted_sgd": OptimizerSpec("sgd", "sort"),
        "rms": OptimizerSpec("rmsprop", "shuffle"),
    }  # rmsprop trains one model at a time
    lrs = {"adam": 1e-3, "sorted_sgd": 1e-2, "rms": 1e-3}
    histories = compare(MODEL, specs, lrs, *splits, epochs=2, batch_size=32, seeds=2)

    assert [len(h) for h in histories.values()] == [2, 2, 2]
    assert len(starts) == 6
    for seed in (0, 1):
        first = starts[("adam", seed)]
        for base in ("sgd", "rmsprop"):
            assert all(torch.equal(a, b) for a, b in zip(first, starts[(base, seed)]))
    assert not torch.equal(starts[("adam", 0)][0], starts[("adam", 1)][0])


def test_training_is_deterministic_and_records_every_epoch(splits):
    state = train_module.initial_state(0, 40, 16, 2)
    a = train_from(state, MODEL, SORTED, 1e-3, *splits, epochs=3, batch_size=32, seed=0)
    b = train_from(state, MODEL, SORTED, 1e-3, *splits, epochs=3, batch_size=32, seed=0)
    assert a == b
    assert len(a.train_loss) == len(a.val_loss) == len(a.val_acc) == 3
    assert all(0.0 <= acc <= 1.0 for acc in a.val_acc)
    c = train_from(state, MODEL, ADAM, 1e-2, *splits, epochs=3, batch_size=32, seed=0)
    assert c.val_loss[-1] < c.val_loss[0]  # plain Adam learns


def test_divergence_is_raised_with_its_epoch(splits):
    state = train_module.initial_state(0, 40, 16, 2)
    with pytest.raises(DivergedError, match=r"non-finite .* at epoch 1") as err:
        train_from(state, MODEL, OptimizerSpec("sgd", "none"), 1e12, *splits, 3, 32, 0)
    assert err.value.epoch == 1 and len(err.value.history.val_loss) == 1


def fake_training(curve):
    def train_wave(lrs):
        return [
            DivergedError(2, "train loss", History()) if lr > 1.0 else History(val_loss=curve(lr))
            for lr in lrs
        ]

    return train_wave


def test_study_scores_min_or_final_and_records_failures():
    curve = lambda lr: [abs(math.log10(lr) + 2) + 1.0, abs(math.log10(lr) + 2)]  # noqa: E731
    study = run_study(fake_training(curve), 12, 1e-4, 1e2, sampler_seed=0, objective="final")
    summary = study_summary(study, 1e-4, 1e2)
    rows = trial_rows(study)
    assert summary["complete"] + summary["failed"] == 12 and summary["failed"] > 0
    assert len(rows) == 12
    failed = [r for r in rows if r["state"] == "fail"]
    assert all(r["lr"] > 1.0 and r["value"] is None for r in failed)
    assert all(r["fail_reason"] == "non-finite train loss at epoch 2" for r in failed)
    best = min((r for r in rows if r["state"] == "complete"), key=lambda r: r["value"])
    assert summary["best_lr"] == best["lr"] and summary["best_value"] == best["value"]

    same = run_study(fake_training(curve), 12, 1e-4, 1e2, sampler_seed=0, objective="min")
    assert [r["lr"] for r in trial_rows(same)] == [r["lr"] for r in rows]  # seeded sampler
    for r_min, r_final in zip(trial_rows(same), rows):
        if r_min["state"] == "complete":
            assert r_min["value"] == pytest.approx(r_final["value"])  # min == final here


def test_study_with_no_completed_trial_names_the_range():
    with pytest.raises(NoTrialCompletedError, match=r"no trial of 3 completed for lr in \[2, 50\]"):
        run_study(fake_training(lambda lr: [1.0]), 3, 2.0, 50.0, sampler_seed=0)


def test_lrs_are_log_uniform_within_the_range():
    study = run_study(fake_training(lambda lr: [1.0]), 10, 1e-5, 1e-1, sampler_seed=3)
    lrs = np.array([r["lr"] for r in trial_rows(study)])
    assert ((lrs >= 1e-5) & (lrs <= 1e-1)).all()
    assert study.trials[0].distributions["lr"].log


@pytest.mark.parametrize(
    ("lr", "edge"),
    [(1e-5, "low"), (2e-5, "low"), (2.1e-5, None), (0.049, None), (0.05, "high"), (0.1, "high")],
)
def test_edge_is_within_a_factor_two_of_either_end(lr, edge):
    assert at_edge(lr, 1e-5, 1e-1) == edge


def test_a_study_whose_optimum_lies_below_the_range_is_flagged():
    # The loss falls toward ever smaller lrs, as the sorted optimizer's does.
    falling = lambda lr: [math.log10(lr) + 6.0]  # noqa: E731
    study = run_study(fake_training(falling), 15, 1e-5, 1e-1, sampler_seed=0, wave_size=5)
    summary = study_summary(study, 1e-5, 1e-1)
    assert summary["best_lr"] < 2e-5 and summary["lr_at_edge"] and summary["lr_edge"] == "low"
    assert "low end of the search range (1e-05)" in edge_warning(summary["best_lr"], 1e-5, 1e-1)
    valley = lambda lr: [abs(math.log10(lr) + 3.0)]  # noqa: E731
    inside = study_summary(run_study(fake_training(valley), 15, 1e-5, 1e-1, 0), 1e-5, 1e-1)
    assert not inside["lr_at_edge"] and inside["lr_edge"] == "none"
