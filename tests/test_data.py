import hashlib
import zipfile

import numpy as np
import pytest
import torch

from gradsort.data import (
    DatasetError,
    holdout_indices,
    load_dataset,
    make_dataset,
    protocol_splits,
    save_dataset,
    to_splits,
)

# Derived once from the dataset the mnist1d authors publish (mnist1d_data.pkl, 5000 samples,
# train split 0.8, seed 42): sums, a fixed projection, the first and last values, label hashes.
PUBLISHED = {
    "x": {
        "shape": (4000, 40),
        "sum": -51.78746787509559,
        "sum_sq": 159248.2538653486,
        "projection": 551.27196291159,
        "first": [
            -0.3320056673693902,
            -0.4719103656557236,
            -0.778697076293495,
            -1.0097408265367047,
        ],
        "last": [
            -0.8137443925814231,
            -1.2162451343416705,
            -1.4649417006350856,
            -1.6509928567520655,
        ],
    },
    "x_test": {
        "shape": (1000, 40),
        "sum": 51.78746787509186,
        "sum_sq": 40751.74613465136,
        "projection": -29.74408357773557,
        "first": [
            -0.07877078047732886,
            -0.21073170588642925,
            -0.09175138109239452,
            0.28267111736736455,
        ],
        "last": [0.4472328851428726, 0.6598756470890784, 0.8777343497528006, 1.193151836835276],
    },
    "y": "d97dc7aecec8ad6b5d8f143ba3e9c4bd7e25c420d7dfc2eb990591cfc0ed3e15",
    "y_test": "8de99be3ff9dab15ae0dc072c3d6ced7cf6b33d365888ce4a386fc944489452c",
}


@pytest.fixture(scope="module")
def published_setup():
    return make_dataset(num_samples=5000, train_split=0.8, seed=42)


def test_generated_arrays_match_the_published_dataset(published_setup):
    w = np.random.default_rng(0).standard_normal(40)
    for name in ("x", "x_test"):
        a, ref = published_setup[name], PUBLISHED[name]
        assert a.shape == ref["shape"]
        np.testing.assert_allclose(a[0, :4], ref["first"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(a[-1, -4:], ref["last"], rtol=0, atol=1e-12)
        # Sums over 160k values: a deviation of 1e-12 per value stays far below 1e-8.
        assert a.sum() == pytest.approx(ref["sum"], abs=1e-8)
        assert (a * a).sum() == pytest.approx(ref["sum_sq"], abs=1e-8)
        assert (a @ w).sum() == pytest.approx(ref["projection"], abs=1e-8)
    for name in ("y", "y_test"):
        digest = hashlib.sha256(published_setup[name].astype(np.int64).tobytes()).hexdigest()
        assert digest == PUBLISHED[name]


def test_generation_is_deterministic_and_seeded():
    a = make_dataset(200, 0.8, seed=1)
    b = make_dataset(200, 0.8, seed=1)
    c = make_dataset(200, 0.8, seed=2)
    for name in a:
        assert np.array_equal(a[name], b[name])
    assert not np.array_equal(a["x"], c["x"])
    assert a["x"].shape == (160, 40) and a["x_test"].shape == (40, 40)


def test_save_load_round_trip_without_pickle(tmp_path):
    arrays = make_dataset(100, 0.8, seed=0)
    path = tmp_path / "d.npz"
    save_dataset(path, arrays)
    with np.load(path, allow_pickle=False) as npz:
        assert sorted(npz.files) == ["x", "x_test", "y", "y_test"]
    loaded = load_dataset(path)
    for name in arrays:
        assert np.array_equal(arrays[name], loaded[name])
    train, val = to_splits(loaded)
    assert train.x.dtype.is_floating_point and len(train) == 80 and len(val) == 20
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind


def _write(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _good():
    return make_dataset(100, 0.8, seed=0)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: a.pop("y_test"), r"missing arrays \['y_test'\]"),
        (lambda a: a.update(x=a["x"][:, :, None]), r"x has shape \(80, 40, 1\)"),
        (lambda a: a.update(y=a["y"][:-1]), "matching lengths"),
        (lambda a: a.update(x_test=a["x_test"][:, :30]), "x has 40 features but x_test 30"),
        (lambda a: a.update(y=a["y"] + 10), "integer labels 0..9"),
        (lambda a: a.update(x=np.full_like(a["x"], np.nan)), "floats that are finite"),
        (lambda a: a.update(x=a["x"] * 1e300), "finite in float32"),
        (lambda a: a.update(x=np.array([[object()]] * 80, dtype=object)), "readable npz"),
    ],
)
def test_broken_dataset_files_name_the_file_and_the_fault(tmp_path, mutate, message):
    arrays = _good()
    mutate(arrays)
    path = tmp_path / "broken.npz"
    _write(path, **arrays)
    with pytest.raises(DatasetError, match=message) as err:
        load_dataset(path)
    assert str(path) in str(err.value)


def test_truncated_and_missing_files(tmp_path):
    path = tmp_path / "d.npz"
    save_dataset(path, _good())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="not a readable npz"):
        load_dataset(path)
    np.save(path, np.zeros((3, 40)))  # a single .npy array at the npz path
    with pytest.raises(DatasetError, match="holds one array, not the npz archive"):
        load_dataset(path.with_suffix(".npz.npy").rename(path))
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset(tmp_path / "absent.npz")
    assert not zipfile.is_zipfile(path)


def test_holdout_is_disjoint_stratified_and_seeded():
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(10), [80, 120, 95, 100, 101, 99, 60, 140, 3, 2])
    rng.shuffle(y)
    train, holdout = holdout_indices(y, 0.2, seed=42)
    assert np.intersect1d(train, holdout).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, holdout])), np.arange(len(y)))
    counts = np.bincount(y[holdout], minlength=10)
    # round(0.2 * count) per class, but at least one and never all
    assert counts.tolist() == [16, 24, 19, 20, 20, 20, 12, 28, 1, 1]
    again_train, again = holdout_indices(y, 0.2, seed=42)
    assert np.array_equal(again, holdout) and np.array_equal(again_train, train)
    assert not np.array_equal(holdout_indices(y, 0.2, seed=43)[1], holdout)


def test_protocols_choose_what_is_trained_validated_and_tested():
    arrays = _good()
    arrays["y"] = np.arange(len(arrays["y"])) % 10
    seed = protocol_splits(arrays, "seed", 0.2, seed=0)
    assert seed.test is None and len(seed.train) == len(arrays["y"])
    assert torch.equal(seed.val.y, torch.as_tensor(arrays["y_test"], dtype=torch.int64))
    held = protocol_splits(arrays, "holdout", 0.2, seed=0)
    train, holdout = holdout_indices(arrays["y"], 0.2, seed=0)
    assert len(held.train) + len(held.val) == len(arrays["y"])
    assert torch.equal(held.val.x, torch.as_tensor(arrays["x"][holdout], dtype=torch.float32))
    assert torch.equal(held.train.y, torch.as_tensor(arrays["y"][train], dtype=torch.int64))
    assert torch.equal(held.test.y, seed.val.y)  # the test split is mnist1d's test split
    with pytest.raises(ValueError, match="protocol 'other'"):
        protocol_splits(arrays, "other", 0.2, seed=0)
