import pytest
import torch

from gradsort.batched import supports, train_batched
from gradsort.data import make_dataset, to_splits
from gradsort.history import DivergedError, History
from gradsort.model import initial_state
from gradsort.params import ModelParams, OptimizerSpec
from gradsort.train import train_from, train_many
from gradsort.tune import run_study, trial_rows, waves

MODEL = ModelParams(hidden_size=32, hidden_layers=2)
# Batched and separate runs order floating-point operations differently (batched matmuls, a
# per-model lr tensor); over 3 epochs the results agree to this relative tolerance.
RTOL = 1e-5


@pytest.fixture(scope="module")
def splits():
    return to_splits(make_dataset(400, 0.8, seed=0))


CASES = [
    ("adam", "none", {}),
    ("adam", "sort", {}),
    ("adam", "shuffle", {"betas": (0.8, 0.99)}),
    ("adamw", "permute", {"weight_decay": 0.1}),
    ("sgd", "sort", {"momentum": 0.9}),
    ("sgd", "none", {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}),
]


@pytest.mark.parametrize(("base", "transform", "kwargs"), CASES)
def test_batched_run_equals_separate_runs(splits, base, transform, kwargs):
    seeds, lrs = [0, 1, 1], [1e-3, 3e-3, 1e-2]  # two models share a seed, as trials do
    states = [initial_state(s, 40, 32, 2) for s in seeds]
    batched = train_batched(states, base, transform, kwargs, lrs, seeds, *splits, 3, 32)
    spec = OptimizerSpec(base, transform, kwargs)
    for state, lr, seed, got in zip(states, lrs, seeds, batched):
        expected = train_from(state, MODEL, spec, lr, *splits, 3, 32, seed)
        assert isinstance(got, History)
        for field in ("train_loss", "val_loss", "val_acc"):
            assert getattr(got, field) == pytest.approx(getattr(expected, field), rel=RTOL)


def test_sorting_stays_within_each_model(splits):
    """Two identical models with very different lrs: sorting across models would couple them."""
    state = initial_state(0, 40, 32, 2)
    alone = train_batched([state], "adam", "sort", {}, [1e-3], [0], *splits, 2, 32)[0]
    paired = train_batched([state, state], "adam", "sort", {}, [1e-3, 1.0], [0, 0], *splits, 2, 32)
    assert paired[0].val_loss == pytest.approx(alone.val_loss, rel=RTOL)


def test_a_diverging_model_leaves_the_others_alone(splits):
    state = initial_state(0, 40, 32, 2)
    results = train_batched([state] * 2, "sgd", "none", {}, [1e-2, 1e12], [0, 0], *splits, 3, 32)
    alone = train_from(state, MODEL, OptimizerSpec("sgd", "none"), 1e-2, *splits, 3, 32, 0)
    assert results[0].val_loss == pytest.approx(alone.val_loss, rel=RTOL)
    assert isinstance(results[1], DivergedError) and results[1].epoch == 1


def test_unbatched_bases_fall_back_to_separate_runs(splits):
    assert supports("adam", {"eps": 1e-7}) and not supports("adam", {"amsgrad": True})
    assert not supports("rmsprop", {})
    state = initial_state(0, 40, 32, 2)
    spec = OptimizerSpec("rmsprop", "sort")
    results = train_many([state] * 2, MODEL, spec, [1e-3, 1e-4], [0, 0], *splits, 2, 32)
    expected = train_from(state, MODEL, spec, 1e-4, *splits, 2, 32, 0)
    assert results[1] == expected


def test_waves_put_the_startup_trials_first():
    assert waves(15, 10, 5) == [10, 5]
    assert waves(15, 10, 1) == [10, 1, 1, 1, 1, 1]
    assert waves(4, 10, 5) == [4]
    assert waves(23, 10, 5) == [10, 5, 5, 3]


def test_batched_startup_wave_draws_the_sequential_lrs():
    def flat(lrs):
        return [History(val_loss=[(lr - 1e-3) ** 2]) for lr in lrs]

    sequential = run_study(flat, 15, 1e-5, 1e-1, sampler_seed=4, wave_size=1)
    waved = run_study(flat, 15, 1e-5, 1e-1, sampler_seed=4, wave_size=5)
    seq_lrs = [row["lr"] for row in trial_rows(sequential)]
    wave_lrs = [row["lr"] for row in trial_rows(waved)]
    assert wave_lrs[:10] == seq_lrs[:10]  # the random start-up trials do not change
    assert len(wave_lrs) == 15
    # Later waves still learn: TPE proposes lrs nearer the optimum than the random draws.
    later = sorted(abs(lr - 1e-3) for lr in wave_lrs[10:])
    assert later[0] < sorted(abs(lr - 1e-3) for lr in wave_lrs[:10])[2]


def test_batched_trials_share_initial_weights_and_batches_but_not_state(splits):
    """Trials of one wave: identical starts, own lr and optimizer state."""
    state = initial_state(0, 40, 32, 2)
    results = train_batched([state] * 3, "adam", "none", {}, [1e-3] * 3, [0] * 3, *splits, 2, 32)
    assert results[0] == results[1] == results[2]
    assert torch.isfinite(torch.tensor(results[0].val_loss)).all()


def test_batched_initial_and_test_scores_equal_separate_runs(splits):
    train_split, val_split = splits
    test_split = to_splits(make_dataset(300, 0.5, seed=5))[1]
    states = [initial_state(s, 40, 32, 2) for s in (0, 1)]
    batched = train_batched(
        states, "adam", "sort", {}, [1e-3, 1e-2], [0, 1], *splits, 2, 32, test_split
    )
    spec = OptimizerSpec("adam", "sort")
    for state, lr, seed, got in zip(states, [1e-3, 1e-2], [0, 1], batched):
        want = train_from(state, MODEL, spec, lr, *splits, 2, 32, seed, test_split)
        assert got.initial_val_loss == pytest.approx(want.initial_val_loss, rel=RTOL)
        assert got.test_loss == pytest.approx(want.test_loss, rel=RTOL)
        assert got.test_acc == pytest.approx(want.test_acc, abs=1e-9)
    assert batched[0].initial_val_loss != batched[1].initial_val_loss
    assert (
        train_batched(states, "adam", "none", {}, [1e-3] * 2, [0, 1], *splits, 1, 32)[0].test_loss
        is None
    )
