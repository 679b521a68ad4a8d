import itertools
import math

import numpy as np
import pytest

from gradsort.analysis import random_sign_consistency, sign_stats
from gradsort.data import make_dataset, to_splits
from gradsort.model import build_model, initial_state
from gradsort.optim import make_optimizer


@pytest.mark.parametrize("steps", [1, 2, 3, 6, 9])
def test_random_sign_consistency_is_exact(steps):
    walks = [abs(sum(signs)) / steps for signs in itertools.product((-1, 1), repeat=steps)]
    assert random_sign_consistency(steps) == pytest.approx(np.mean(walks), rel=1e-12)


def test_large_step_counts_follow_the_normal_limit():
    assert random_sign_consistency(400) == pytest.approx(math.sqrt(2 / (math.pi * 400)), rel=1e-3)


@pytest.fixture(scope="module")
def train_split():
    return to_splits(make_dataset(600, 0.8, seed=0))[0]


def measure(train_split, transform, lr, base="adam"):
    state = initial_state(0, 40, 32, 2)
    net = build_model(state, 40, 32, 2)
    optimizer = make_optimizer(net.parameters(), base, lr, transform, seed=0)
    return sign_stats(net, optimizer, train_split, steps=40, batch_size=32, seed=0)


def test_sorting_makes_signs_consistent_and_steps_coherent(train_split):
    plain = measure(train_split, "none", 1e-4)
    ordered = measure(train_split, "sort", 1e-4)
    shuffled = measure(train_split, "shuffle", 1e-4)
    assert ordered["sign_consistency"] > 0.9 > plain["sign_consistency"]
    assert shuffled["sign_consistency"] < plain["sign_consistency"]
    assert shuffled["sign_consistency"] == pytest.approx(random_sign_consistency(40), abs=0.03)
    assert ordered["path_coherence"] > 0.9 and ordered["adam_direction"] > 0.9
    assert plain["adam_direction"] < ordered["adam_direction"]
    assert all(0 <= v <= 1 + 1e-9 for r in (plain, ordered) for v in r.values())


def test_bases_without_adam_moments_report_no_direction(train_split):
    result = measure(train_split, "sort", 1e-3, base="sgd")
    assert math.isnan(result["adam_direction"]) and result["sign_consistency"] > 0.9
